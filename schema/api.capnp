@0xc3b1f0a2d9e84a17;
# imaged's RPC interface, served on its Unix socket. The caller's tenant comes from the socket's
# peer credentials, never from a parameter.
#
# Expected failures (validation, not found, conflicts) are results: every result carries an
# `error` that is null on success. A broken connection or a bug is an exception.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("imaged::api");


struct Error {
  code @0 :Text;      # stable: E_ENV_DUPLICATE_KEY, E_NOT_FOUND, ... (PRODUCT.md)
  message @1 :Text;
}

struct EnvVar {
  key @0 :Text;
  value @1 :Text;
}

# --- the catalog ---------------------------------------------------------------------------

struct StarterSummary {
  name @0 :Text;
  description @1 :Text;
  lines @2 :List(Text);          # newest first
}

struct StarterVersion {
  version @0 :Text;
  published @1 :Text;
  packages @2 :List(Text);       # name=version, the SBOM
}

struct StarterLine {
  line @0 :Text;
  maintained @1 :Bool;
  production @2 :Text;           # the newest version
  environment @3 :List(EnvVar);  # the starter's env merged with the line's
  versions @4 :List(StarterVersion);  # newest first
  licenses @5 :List(Text);       # of the production version's packages, name: license
}

struct Starter {
  name @0 :Text;
  description @1 :Text;
  environment @2 :List(EnvVar);
  entrypoint @3 :List(Text);
  cmd @4 :List(Text);
  user @5 :Text;
  workdir @6 :Text;
  lines @7 :List(StarterLine);
}

struct PackageHit {
  name @0 :Text;
  version @1 :Text;
  description @2 :Text;
  versions @3 :List(Text);
}

struct CatalogInfo {
  digest @0 :Text;
  source @1 :Text;
  starters @2 :UInt32;
  packages @3 :UInt32;
  problems @4 :List(Text);       # what was left out or ignored, "file:line: message"
}

# --- images ------------------------------------------------------------------------------

struct ImageSpec {
  name @0 :Text;
  description @1 :Text;
  starter @2 :Text;
  packages @3 :List(Text);       # added packages: name, provided name or constraint
  env @4 :List(EnvVar);
}

struct ImageEdit {
  # Only what is set changes. Starter and name are immutable (E_IMMUTABLE_FIELD).
  addPackages @0 :List(Text);
  removePackages @1 :List(Text);
  setEnv @2 :List(EnvVar);
  unsetEnv @3 :List(Text);
  description @4 :Text;
  hasDescription @5 :Bool;
  starter @6 :Text;              # set only to be refused with E_IMMUTABLE_FIELD
  name @7 :Text;                 # likewise
}

struct LineResult {
  line @0 :Text;
  version @1 :Text;
  status @2 :Text;               # "built", "skipped", "pending"
  packages @3 :List(Text);       # name=version, when built
  code @4 :Text;                 # when skipped
  reason @5 :Text;               # when skipped
  digest @6 :Text;               # when built and written ("" until images are written)
}

struct Tag {
  tag @0 :Text;
  version @1 :Text;
  digest @2 :Text;
}

struct Build {
  id @0 :UInt64;                 # the sequence number of its BuildRequested event
  number @1 :UInt32;             # 1, 2, 3 ... within the image
  reason @2 :Text;               # created, edited, rebuild, catalog-changed, resumed
  status @3 :Text;               # in-progress, succeeded, failed, cancelled
  requestedAt @4 :Text;
  endedAt @5 :Text;
  catalogDigest @6 :Text;
  lines @7 :List(LineResult);
  error @8 :Error;
}

struct Image {
  name @0 :Text;
  fullName @1 :Text;             # tenant/name
  description @2 :Text;
  starter @3 :Text;
  status @4 :Text;               # in-progress, created, failed
  createdAt @5 :Text;            # time of the first successful build, "" when none yet
  packages @6 :List(Text);
  env @7 :List(EnvVar);
  version @8 :UInt64;            # the stream version, for expected-version checks
  lines @9 :List(LineResult);    # of the latest build
  tags @10 :List(Tag);           # from the latest successful build
  error @11 :Error;              # when the latest build failed
  builds @12 :List(Build);       # oldest first (only in getImage / builds)
  tenant @13 :Text;
}

struct BlobInfo {
  digest @0 :Text;
  mediaType @1 :Text;
  size @2 :UInt64;
}

struct TagMove {
  time @0 :Text;
  sequence @1 :UInt64;           # the event that moved it (a build's end)
  fromVersion @2 :Text;          # "" when the tag did not exist before
  fromDigest @3 :Text;
  toVersion @4 :Text;            # "" when the tag went away
  toDigest @5 :Text;
  buildId @6 :UInt64;
  reason @7 :Text;               # the build's reason: created, edited, rebuild, catalog-changed, resumed
}

struct HistoryEntry {
  sequence @0 :UInt64;
  version @1 :UInt64;
  time @2 :Text;
  kind @3 :Text;                 # imageCreated, buildRequested, lineBuilt, ...
  summary @4 :Text;
  actor @5 :Text;                # tenant/uid/client
}

interface BuildWatcher {
  # Receives an image's build progress live; see Imaged.watch.
  line @0 (result :LineResult) -> stream;
  ended @1 (image :Image) -> ();
}

interface EventSubscriber {
  # Receives stored events in order, then live ones. Each is one Cap'n Proto `Event` message
  # (events.capnp), flat, exactly as stored in the log.
  events @0 (events :List(Data)) -> stream;
}

interface Handle {
  # Dropping it ends the watch or subscription it was returned for.
}

interface Imaged {
  listStarters @0 () -> (starters :List(StarterSummary), error :Error);
  getStarter @1 (name :Text) -> (starter :Starter, error :Error);
  searchPackages @2 (query :Text, limit :UInt32) -> (hits :List(PackageHit), error :Error);

  preview @3 (spec :ImageSpec) -> (lines :List(LineResult), error :Error);
  # The plan per line (what would be installed, which lines would be skipped and why); records
  # nothing.

  createImage @4 (spec :ImageSpec, idempotencyKey :Text) -> (image :Image, error :Error);
  # Records the image and requests its build. A retry with the same idempotency key returns
  # the first result and records nothing more.

  getImage @5 (name :Text, atTime :Text) -> (image :Image, error :Error);
  listImages @6 () -> (images :List(Image), error :Error);
  editImage @7 (name :Text, edit :ImageEdit, expectedVersion :UInt64) -> (image :Image, error :Error);
  # expectedVersion 0: any.
  rebuildImage @8 (name :Text, expectedVersion :UInt64) -> (image :Image, error :Error);
  deleteImage @9 (name :Text, expectedVersion :UInt64) -> (error :Error);
  history @10 (name :Text) -> (entries :List(HistoryEntry), error :Error);
  # The live image's events; when the name has no live image, those of the last one deleted.

  watch @11 (name :Text, watcher :BuildWatcher) -> (handle :Handle, image :Image, error :Error);
  # Sends each line result of the image's latest build (those already recorded first, then each
  # as it is recorded), then `ended` once the build has ended (at once when it already has).
  # Dropping the handle stops it.

  readEvents @12 (from :UInt64, limit :UInt32) -> (events :List(Data), last :UInt64, error :Error);
  # Stored events from sequence `from`, at most `limit`. The log holds every tenant's events, so
  # only callers with the daemon's own uid may read it (E_PERMISSION_DENIED otherwise).

  subscribe @13 (from :UInt64, subscriber :EventSubscriber) -> (handle :Handle, error :Error);
  # Every stored event from `from`, then each new one as it is committed, in order, with flow
  # control (a slow subscriber is sent no more than it has acknowledged, plus a window).

  reloadCatalog @14 () -> (catalog :CatalogInfo, error :Error);
  catalogInfo @15 () -> (catalog :CatalogInfo, error :Error);

  exportImage @16 (name :Text, tags :List(Text)) -> (manifests :List(Tag), blobs :List(BlobInfo), error :Error);
  # What an OCI layout of the image holds: each tag (all when `tags` is empty) with its
  # manifest's digest, and every blob the manifests reference. E_NOT_FOUND for an unknown tag or
  # an image with nothing built yet.

  readBlob @17 (name :Text, digest :Text, offset :UInt64, length :UInt32) -> (data :Data, error :Error);
  # A piece (at most 4 MiB) of one of the image's blobs, as listed by exportImage.

  getSbom @18 (name :Text, line :Text) -> (line :Text, version :Text, spdx :Text, error :Error);

  tagHistory @19 (name :Text, tag :Text) -> (moves :List(TagMove), error :Error);
  # Every move of one tag of the image, oldest first, replayed from the log.
  # The SPDX 2.3 JSON of a built line of the latest successful build (`line` empty: the one
  # `latest` points at).
}
