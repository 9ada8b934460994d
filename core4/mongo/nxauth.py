"""Authentication for the embedded NX-27017 server, which has none.

NX-27017 (0.8.1) knows neither users nor ``--auth`` nor a Unix socket: any
local account could connect to its loopback port. core4 adds what a
``mongod --auth`` does, inside the server process it starts (like
:mod:`core4.mongo.nxpatch`):

- ``credentials.json`` in the data directory (0600, in the 0700 data
  directory) holds one user and a random password, generated before the
  first start (:func:`ensure_credentials`);
- the server speaks SCRAM-SHA-256 (RFC 5802/7677, what pymongo uses by
  default, including speculative authentication in ``hello``) and refuses
  every command of a connection that has not authenticated, except those
  a real ``mongod`` answers without authentication (``hello``, ``ping``,
  ``buildInfo``): code 13, ``Unauthorized``;
- core4 connects with ``mongodb://core4:PASSWORD@127.0.0.1:PORT/``
  (:func:`client_url`).

The password never appears on a command line: the server reads it from the
file. Never imported by core4 itself outside this module's users.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading

from core4 import private

#: the credentials file in the data directory
CREDENTIALS_FILE = "credentials.json"
#: the one user of the embedded server
USER = "core4"
MECHANISM = "SCRAM-SHA-256"
#: PBKDF2 rounds: the lowest pymongo accepts (the password is random)
ITERATIONS = 4096
#: commands a connection may send before it authenticated (as mongod)
OPEN_COMMANDS = frozenset({"hello", "Hello", "isMaster", "ismaster", "ping",
                           "buildInfo", "buildinfo"})
HELLO = frozenset({"hello", "Hello", "isMaster", "ismaster"})


# the credentials file (client and server side) --------------------------------

def read_credentials(data_dir):
    """Return ``{"user", "password"}`` of ``data_dir``, or None."""
    try:
        with open(os.path.join(data_dir, CREDENTIALS_FILE)) as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not all(
            isinstance(found.get(key), str) and found[key]
            for key in ("user", "password")):
        return None
    return found


def ensure_credentials(data_dir):
    """Return the credentials of ``data_dir``, generating them (0600) if
    missing. Called under the server's lock before a start."""
    found = read_credentials(data_dir)
    if found is None:
        found = {"user": USER, "password": secrets.token_urlsafe(32)}
        private.write_private(os.path.join(data_dir, CREDENTIALS_FILE),
                              json.dumps(found) + "\n")
    return found


def client_url(url, credentials):
    """Return ``url`` (``mongodb://HOST:PORT/``) with ``credentials``."""
    return url.replace("mongodb://", "mongodb://%s:%s@" % (
        credentials["user"], credentials["password"]), 1)


# SCRAM-SHA-256, the server's part -----------------------------------------------

class AuthenticationFailed(Exception):
    """A SASL step failed (wrong user, proof or message)."""


def _attributes(message):
    """``{b"r": b"...", ...}`` of a SCRAM message ``a=1,b=2``."""
    found = {}
    for part in message.split(b","):
        key, sep, value = part.partition(b"=")
        if not sep or len(key) != 1:
            raise AuthenticationFailed("malformed SCRAM message")
        found[key] = value
    return found


def _hmac(key, message):
    return hmac.new(key, message, hashlib.sha256).digest()


class ScramServer:
    """The server side of SCRAM-SHA-256 for one user and password."""

    def __init__(self, user, password, iterations=ITERATIONS):
        self.user = user.encode("utf-8")
        self.salt = os.urandom(16)
        self.iterations = iterations
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"),
                                     self.salt, iterations)
        self.stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
        self.server_key = _hmac(salted, b"Server Key")

    def first(self, client_first):
        """Answer the client's first message; return ``(state,
        server_first)``."""
        header, sep, bare = client_first.partition(b",,")
        if not sep or header not in (b"n", b"y"):
            raise AuthenticationFailed("unsupported GS2 header")
        attrs = _attributes(bare)
        user = attrs.get(b"n", b"").replace(b"=2C", b",").replace(b"=3D", b"=")
        if not hmac.compare_digest(user, self.user) or not attrs.get(b"r"):
            raise AuthenticationFailed("unknown user")
        nonce = attrs[b"r"] + base64.b64encode(os.urandom(24))
        server_first = b"r=%s,s=%s,i=%d" % (
            nonce, base64.b64encode(self.salt), self.iterations)
        return (header + b",,", bare, server_first, nonce), server_first

    def final(self, state, client_final):
        """Check the client's proof; return the server's final message."""
        header, bare, server_first, nonce = state
        without_proof, sep, proof = client_final.rpartition(b",p=")
        attrs = _attributes(without_proof) if sep else {}
        if attrs.get(b"r") != nonce or attrs.get(b"c") != base64.b64encode(
                header):
            raise AuthenticationFailed("nonce or channel binding differ")
        auth_message = b",".join((bare, server_first, without_proof))
        try:
            proof = base64.b64decode(proof, validate=True)
        except ValueError:
            raise AuthenticationFailed("malformed proof") from None
        signature = _hmac(self.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthenticationFailed("malformed proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(),
                                   self.stored_key):
            raise AuthenticationFailed("wrong proof")
        return b"v=" + base64.b64encode(_hmac(self.server_key, auth_message))


# the gate: which connection may do what ------------------------------------------

def _error(code, name, message):
    return {"ok": 0, "errmsg": message, "code": code, "codeName": name}


def unauthorized(command):
    """The reply to a command of a connection that did not authenticate."""
    return _error(13, "Unauthorized", "command %s requires authentication"
                  % command)


FAILED = _error(18, "AuthenticationFailed", "Authentication failed.")


class Gate:
    """Which connections (NX's ``_conn_id``) authenticated, and their SASL
    conversations in progress."""

    def __init__(self, scram):
        self.scram = scram
        self._lock = threading.Lock()
        self._authenticated = set()
        self._conversations = {}

    def authenticated(self, conn):
        """True if the connection ``conn`` authenticated."""
        with self._lock:
            return conn is not None and conn in self._authenticated

    def forget(self, conn):
        """Drop what is known about the closed connection ``conn``."""
        with self._lock:
            self._authenticated.discard(conn)
            self._conversations.pop(conn, None)

    def start(self, conn, body):
        """Answer ``saslStart`` (or a speculative one in ``hello``)."""
        if body.get("mechanism") != MECHANISM:
            return _error(2, "BadValue", "Received authentication for "
                          "mechanism %s which is not enabled"
                          % body.get("mechanism"))
        try:
            state, reply = self.scram.first(bytes(body.get("payload") or b""))
        except (AuthenticationFailed, TypeError):
            return FAILED
        with self._lock:
            self._conversations[conn] = state
        return {"conversationId": 1, "done": False, "payload": reply, "ok": 1}

    def proceed(self, conn, body):
        """Answer ``saslContinue``: the proof, then done."""
        with self._lock:
            state = self._conversations.pop(conn, None)
        if state is None:
            return FAILED
        try:
            reply = self.scram.final(state, bytes(body.get("payload") or b""))
        except (AuthenticationFailed, TypeError):
            return FAILED
        with self._lock:
            self._authenticated.add(conn)
        return {"conversationId": 1, "done": True, "payload": reply, "ok": 1}

    def extend_hello(self, conn, body, reply):
        """Add what a client asks of the authentication to ``hello``'s
        ``reply``: the mechanisms of the user and a speculative start."""
        if reply.get("ok") != 1:
            return
        if body.get("saslSupportedMechs") == "admin." + self.scram.user.decode(
                "utf-8"):
            reply["saslSupportedMechs"] = [MECHANISM]
        speculative = body.get("speculativeAuthenticate")
        if isinstance(speculative, dict) and "saslStart" in speculative:
            answer = self.start(conn, speculative)
            if answer.get("ok") == 1:
                reply["speculativeAuthenticate"] = {
                    key: value for key, value in answer.items() if key != "ok"}


# in the server process -------------------------------------------------------------

def _body(msg):
    """The command document of an OP_MSG as NX parsed it ({} if none)."""
    for kind, doc in msg.get("sections", ()):
        if kind == "body" and isinstance(doc, dict):
            return doc
    return {}


def _data_dir(argv):
    """The ``--data-dir`` of the server's command line."""
    args = dict(zip(argv, argv[1:]))
    return args.get("--data-dir")


def apply(argv=None):
    """Refuse unauthenticated clients in this NX server process (before it
    serves). Exits if the data directory has no credentials file."""
    from nx_27017.handler import NeoSQLiteHandler as cls
    data_dir = _data_dir(sys.argv if argv is None else argv)
    credentials = read_credentials(data_dir) if data_dir else None
    if credentials is None:
        sys.exit("core4: no %s in the data directory %s: the embedded "
                 "server is started by core4 (coco --db start)"
                 % (CREDENTIALS_FILE, data_dir))
    gate = Gate(ScramServer(credentials["user"], credentials["password"]))
    handle_command, handle_insert = cls.handle_command, cls.handle_insert
    handle_query, closed = cls.handle_query, cls.close_streams_for_connection

    def command(self, msg):
        body, conn = _body(msg), msg.get("_conn_id")
        name = next(iter(body), None)
        if name == "saslStart":
            return msg["request_id"], gate.start(conn, body)
        if name == "saslContinue":
            return msg["request_id"], gate.proceed(conn, body)
        if name not in OPEN_COMMANDS and not gate.authenticated(conn):
            return msg["request_id"], unauthorized(name)
        request_id, reply = handle_command(self, msg)
        if name in HELLO and isinstance(reply, dict):
            gate.extend_hello(conn, body, reply)
        return request_id, reply

    def insert(self, msg):
        if not gate.authenticated(msg.get("_conn_id")):
            return msg["request_id"], unauthorized(
                next(iter(_body(msg)), "insert"))
        return handle_insert(self, msg)

    def query(self, msg):
        collection = msg.get("collection") or ""
        if not (collection == "$cmd" or collection.endswith(".$cmd")
                or gate.authenticated(msg.get("_conn_id"))):
            return msg["request_id"], [dict(unauthorized("find"),
                                            **{"$err": "unauthorized"})]
        return handle_query(self, msg)

    def close(self, conn_id):
        gate.forget(conn_id)
        return closed(self, conn_id)

    cls.handle_command = command
    cls.handle_insert = insert
    cls.handle_query = query
    cls.close_streams_for_connection = close
