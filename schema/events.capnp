@0xf6af1acd14ffee69;
# The records of imaged's event log. One `Event` message is one LMDB value in the `events`
# database (see docs/storage.md). The log is never rewritten, so this schema only grows:
# add fields and union members with new ordinals; never renumber, retype or reuse one.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("imaged::schema");

struct Event {
  # Envelope. `sequence`, `streamVersion`, `time`, `prevHash` and `hash` are assigned by the
  # store when the event is appended; the rest comes from the caller.
  sequence @0 :UInt64;        # global position, 1-based, strictly increasing, no gaps
  streamId @1 :Text;          # e.g. "image/acme/web/1", "catalog"
  streamVersion @2 :UInt64;   # 1-based position within the stream
  time @3 :Int64;             # nanoseconds since the Unix epoch (UTC); never decreases along the log
  actor @4 :Actor;
  correlationId @5 :Text;     # ties together the events caused by one request
  idempotencyKey @6 :Text;    # the client's key for the append that wrote this event ("" = none)
  payload @7 :Payload;
  prevHash @8 :Data;          # `hash` of the event before (32 zero bytes for sequence 1)
  hash @9 :Data;              # SHA-256(prevHash ‖ this message's bytes with `hash` zeroed)
}

struct Actor {
  tenant @0 :Text;            # the tenant the request acted for ("" for the daemon itself)
  uid @1 :UInt32;             # the peer's uid (SO_PEERCRED)
  client @2 :Text;            # free text the client names itself with, e.g. "imagectl/0.1"
}

struct Payload {
  union {
    unknown @0 :Void;         # never written; what an older reader sees of a newer member
    imageCreated @1 :ImageCreated;
    imageEdited @2 :ImageEdited;
    imageDeleted @3 :ImageDeleted;
    buildRequested @4 :BuildRequested;
    buildStarted @5 :BuildStarted;
    lineBuilt @6 :LineBuilt;
    lineSkipped @7 :LineSkipped;
    buildSucceeded @8 :BuildSucceeded;
    buildFailed @9 :BuildFailed;
    buildCancelled @10 :BuildCancelled;
    catalogLoaded @11 :CatalogLoaded;
  }
}

struct EnvVar {
  key @0 :Text;
  value @1 :Text;
}

struct PackageRef {
  # One installed package, exactly: `name=version`.
  name @0 :Text;
  version @1 :Text;
}

struct ImageCreated {
  tenant @0 :Text;
  name @1 :Text;
  description @2 :Text;
  starter @3 :Text;
  packages @4 :List(Text);    # added packages as the user wrote them (name, provide or constraint)
  env @5 :List(EnvVar);       # custom env, in the user's order
}

struct ImageEdited {
  # The image's new editable fields, whole (not a diff), so replay needs no earlier state.
  description @0 :Text;
  packages @1 :List(Text);
  env @2 :List(EnvVar);
}

struct ImageDeleted {
  reason @0 :Text;
}

enum BuildReason {
  created @0;
  edited @1;
  rebuild @2;                 # asked for by a user
  catalogChanged @3;          # the starter's lines or production versions changed
  resumed @4;                 # re-run after a restart interrupted the previous attempt
}

struct BuildRequested {
  # The build's id is the sequence number of this event.
  reason @0 :BuildReason;
  catalogDigest @1 :Text;     # the catalog in force when the build was requested
}

struct BuildStarted {
  buildId @0 :UInt64;
  catalogDigest @1 :Text;     # the catalog the build resolves against
  lines @2 :List(LinePlan);   # every maintained line, with the version that will be built
}

struct LinePlan {
  line @0 :Text;
  version @1 :Text;
}

struct LineBuilt {
  buildId @0 :UInt64;
  line @1 :Text;
  version @2 :Text;
  packages @3 :List(PackageRef);   # the resolved set, sorted by name
  digest @4 :Text;                 # "sha256:..." of the line's manifest ("" until images are written)
  sbomDigest @5 :Text;
}

struct LineSkipped {
  buildId @0 :UInt64;
  line @1 :Text;
  version @2 :Text;
  code @3 :Text;                   # E_PACKAGE_CONFLICT, E_PACKAGE_NOT_FOUND, E_BUILD_INTERRUPTED, ...
  reason @4 :Text;                 # the explanation a person can act on
}

struct BuildSucceeded {
  buildId @0 :UInt64;
}

struct BuildFailed {
  buildId @0 :UInt64;
  code @1 :Text;                   # E_NO_BUILDABLE_LINE, E_BUILD_INTERRUPTED, ...
  message @2 :Text;
}

struct BuildCancelled {
  buildId @0 :UInt64;
  supersededBy @1 :UInt64;         # sequence of the event that superseded it (edit, delete, rebuild)
  reason @2 :Text;
}

struct CatalogLoaded {
  digest @0 :Text;
  source @1 :Text;                 # where it was loaded from (a directory path)
  starters @2 :List(StarterLines);
}

struct StarterLines {
  name @0 :Text;
  lines @1 :List(LinePlan);        # maintained lines with their production versions
}
