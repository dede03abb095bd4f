// MongoDB roles and users for m8: each service may touch only the collections its work
// needs. Run once as an administrator (and again after an upgrade; it updates in place):
//
//   M8_MONGODB_DATABASE=m8 M8_MONGODB_API_PASSWORD=... M8_MONGODB_KEYROTATOR_PASSWORD=... \
//   M8_MONGODB_REACTOR_VAULT_PASSWORD=... M8_MONGODB_REACTOR_AWS_PASSWORD=... \
//   mongosh "mongodb://admin@mongo-0.example:27017/admin?replicaSet=rs0&tls=true" --file users.js
//
// Passwords come from the environment only (never a command-line argument). Each service
// then connects as m8-<service> with authSource=<database>:
//   mongodb://m8-api:<password>@.../?replicaSet=rs0&authSource=m8
//
// What MongoDB cannot express: `update` on `events` is per collection, not per field or
// per document. Every service marks its own events published (the outbox), and the API
// redacts ciphertexts, so each may update any event. Audit the database's own log, and
// keep backups, to see and undo a change made with a stolen credential.
//
// Roles are enforced only by a MongoDB with authorization on (`--auth`, or `security.
// authorization: enabled`; a replica set also needs a keyFile or x.509 between members).
// SecantusDB, the test server of m8's own tests, accepts these commands but does not
// enforce the roles.

const database = process.env.M8_MONGODB_DATABASE || "m8";
const m8 = db.getSiblingDB(database);

const READ = ["find"];
const WRITE = ["find", "insert", "update", "remove"];
const INDEXED = (actions) => [...actions, "createIndex"];

// Every service: the event store (append, load, mark published) and the outbox lease.
const common = {
  events: INDEXED(["find", "insert", "update"]),
  outbox_lease: ["find", "insert", "update"],
};

// Every reactor: the sealed keys it opens, its receipt key, and the leases that let one
// upload at a time write a path (shared by the reactors of every type).
const reactors = {
  upload_keys: READ,
  receipt_keys: INDEXED(["find", "insert", "update"]),
  reactor_path_leases: ["find", "insert", "update"],
};

const services = {
  api: {
    ...common,
    upload_requests: INDEXED(["find", "insert"]),
    // changeStream: with several replicas, each follows outcomes projected by the others.
    rm_uploads: INDEXED([...WRITE, "changeStream"]),
    rm_secrets: INDEXED(WRITE),
    rm_schema: ["find", "insert"],
    receipt_keys: READ,
    // Read-only, for display: which upload holds a path's lease (a pending upload's stage
    // in GET /v1/uploads/{id}). The reactors own it.
    reactor_path_leases: READ,
  },
  keyrotator: {
    ...common,
    upload_keys: INDEXED(WRITE),
    rotator_live_keys: INDEXED(WRITE),
    rotator_signing_keys: INDEXED(WRITE),
  },
  "reactor-vault": { ...common, ...reactors },
  "reactor-aws": { ...common, ...reactors },
};

for (const [service, collections] of Object.entries(services)) {
  const role = `m8-${service}`;
  const privileges = Object.entries(collections).map(([collection, actions]) => ({
    resource: { db: database, collection },
    actions,
  }));
  if (m8.getRole(role)) {
    m8.updateRole(role, { privileges, roles: [] });
  } else {
    m8.createRole({ role, privileges, roles: [] });
  }
  const variable = `M8_MONGODB_${service.toUpperCase().replace("-", "_")}_PASSWORD`;
  const pwd = process.env[variable];
  if (!pwd) {
    throw new Error(`set ${variable}`);
  }
  if (m8.getUser(role)) {
    m8.updateUser(role, { pwd, roles: [role] });
  } else {
    m8.createUser({ user: role, pwd, roles: [role] });
  }
  print(`${role}: ${Object.keys(collections).join(", ")}`);
}
