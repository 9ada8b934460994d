#!/bin/sh
# Make the secrets of docker-compose.yml in deploy/secrets/ (once; existing
# files are kept): the replica set's keyfile and the passwords of the MongoDB
# users root and core4. The directory is 0700 (no other account of this host
# may read it); the files are 0644 so that the containers' own users (mongodb,
# core4) can read the copies Docker mounts at /run/secrets/.
#
#   cd deploy && sh make-secrets.sh
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 0700 secrets
make() {
    if [ ! -s "secrets/$1" ]; then
        sh -c "$2" > "secrets/$1"
        echo "created secrets/$1"
    fi
    chmod 0644 "secrets/$1"
}
# hex: no character needs escaping in a MongoDB url
make mongo_root_password "openssl rand -hex 32"
make mongo_core4_password "openssl rand -hex 32"
# 756 random bytes in base64 (MongoDB: 6 to 1024 base64 characters)
make mongo_keyfile "openssl rand -base64 756"
