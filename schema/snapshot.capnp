@0xc2c03dd879ef3d9b;
# A snapshot of the daemon's projection: the state after applying the log up to `sequence`,
# so that start-up and replay only apply the events after it. A snapshot is a cache, never a
# source of truth: it is used only when the log's event at `sequence` still has `eventHash`
# (daemon/domain/snapshot.h), and it can always be deleted. Evolve it like events.capnp: add
# fields with new ordinals; bump `format` when an old reader would misread a new snapshot.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("imaged::schema");

using Events = import "events.capnp";

struct ProjectionSnapshot {
  format @0 :UInt32;                 # 1
  sequence @1 :UInt64;               # the last event applied
  eventHash @2 :Data;                # that event's `hash` in the log
  lastTime @3 :Int64;                # the latest event time applied
  catalog @4 :SnapshotCatalog;
  images @5 :List(SnapshotImage);    # every image stream, deleted ones included
  incarnations @6 :List(Incarnation);
  createdBy @7 :List(CreatedBy);
  packageSets @8 :List(List(Text));  # distinct resolved sets; lines refer to them by index
}

struct SnapshotCatalog {
  digest @0 :Text;
  source @1 :Text;
  starters @2 :List(Events.StarterLines);
}

struct SnapshotImage {
  streamId @0 :Text;
  tenant @1 :Text;
  name @2 :Text;
  description @3 :Text;
  starter @4 :Text;
  packages @5 :List(Text);
  env @6 :List(Events.EnvVar);
  version @7 :UInt64;
  deleted @8 :Bool;
  createdAt @9 :Int64;
  builds @10 :List(SnapshotBuild);
}

enum SnapshotBuildStatus {
  inProgress @0;
  succeeded @1;
  failed @2;
  cancelled @3;
}

enum SnapshotLineStatus {
  pending @0;
  built @1;
  skipped @2;
}

struct SnapshotBuild {
  id @0 :UInt64;
  number @1 :UInt32;
  reason @2 :Events.BuildReason;
  status @3 :SnapshotBuildStatus;
  started @4 :Bool;
  catalogDigest @5 :Text;
  requestedAt @6 :Int64;
  endedAt @7 :Int64;
  lines @8 :List(SnapshotLine);
  errorCode @9 :Text;
  errorMessage @10 :Text;
}

struct SnapshotLine {
  line @0 :Text;
  version @1 :Text;
  status @2 :SnapshotLineStatus;
  packageSet @3 :UInt32;             # 1-based index into packageSets; 0: none
  code @4 :Text;
  reason @5 :Text;
  digest @6 :Text;
  sbomDigest @7 :Text;
}

struct Incarnation {
  key @0 :Text;                      # "tenant/name"
  count @1 :UInt32;                  # images ever created with that name
}

struct CreatedBy {
  key @0 :Text;                      # idempotency key as stored
  streamId @1 :Text;
}
