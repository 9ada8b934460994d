// Run once by the mongo-init service of docker-compose.yml (mongosh):
// initiate the replica set rs0 of mongo1, mongo2 and mongo3 unless it is
// initiated already, then wait until it has a primary. Idempotent.
const config = {
  _id: "rs0",
  members: [
    { _id: 0, host: "mongo1:27017", priority: 2 },
    { _id: 1, host: "mongo2:27017", priority: 1 },
    { _id: 2, host: "mongo3:27017", priority: 1 },
  ],
};

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

for (let waited = 0; !db.hello().primary; waited++) {
  if (waited >= 120) {
    throw new Error("replica set rs0 has no primary after 120 s");
  }
  sleep(1000);
}
print("replica set rs0 primary: " + db.hello().primary);
