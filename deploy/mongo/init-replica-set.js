// Run once by the mongo-init service of docker-compose.yml (mongosh, on
// mongo1's localhost): initiate the replica set rs0 of mongo1, mongo2 and
// mongo3, wait until mongo1 is its primary, then create the users root
// (role root) and core4 (readWrite on the database core4) with the passwords
// of the Docker secrets. Idempotent: a later run authenticates as root and
// sets the core4 user's password and roles again.
const fs = require("fs");
const secret = (name) => fs.readFileSync("/run/secrets/" + name, "utf8").trim();
const rootPassword = secret("mongo_root_password");
const core4Password = secret("mongo_core4_password");
const core4Roles = [{ role: "readWrite", db: "core4" }];
const admin = db.getSiblingDB("admin");

const config = {
  _id: "rs0",
  members: [
    { _id: 0, host: "mongo1:27017", priority: 2 },
    { _id: 1, host: "mongo2:27017", priority: 1 },
    { _id: 2, host: "mongo3:27017", priority: 1 },
  ],
};

// before the first user exists the localhost exception lets us in
let isRoot = false;
try {
  admin.auth("root", rootPassword);
  isRoot = true;
} catch (e) {
  print("no user root yet: using the localhost exception");
}

try {
  rs.status();
  print("replica set rs0 is initiated already");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  rs.initiate(config);
  print("replica set rs0 initiated");
}

for (let waited = 0; !db.hello().isWritablePrimary; waited++) {
  if (waited >= 120) {
    throw new Error("mongo1 is not the primary of rs0 after 120 s");
  }
  sleep(1000);
}
print("replica set rs0 primary: " + db.hello().primary);

if (!isRoot) {
  admin.createUser({ user: "root", pwd: rootPassword, roles: ["root"] });
  admin.auth("root", rootPassword);
  print("created the user root");
}
if (admin.getUser("core4")) {
  admin.updateUser("core4", { pwd: core4Password, roles: core4Roles });
  print("updated the user core4");
} else {
  admin.createUser({ user: "core4", pwd: core4Password, roles: core4Roles });
  print("created the user core4");
}
