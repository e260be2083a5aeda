// Snapshots of the projection: a round trip at every position of a scripted history, and the
// checks that decide whether a snapshot file may be used.
#include "daemon/domain/snapshot.h"

#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "daemon/domain/events.h"
#include "tests/domain/history.h"

namespace imaged::domain {
namespace {

namespace fs = std::filesystem;
using testing::describe;
using testing::History;
using testing::TempDir;

store::Hash hashAt(History& h, uint64_t sequence) {
  auto txn = h.log().read();
  auto hash = eventHashAt(**txn, sequence);
  EXPECT_TRUE(hash.ok());
  return *hash;
}

Projection decodeSnapshot(kj::ArrayPtr<const capnp::word> words) {
  capnp::FlatArrayMessageReader reader(words);
  return Projection::load(reader.getRoot<schema::ProjectionSnapshot>());
}

// Loads from `dir` against the history's log; the warnings land in `warnings`.
std::optional<LoadedSnapshot> load(History& h, const std::string& dir,
                                   std::vector<std::string>& warnings,
                                   uint64_t maxSequence = UINT64_MAX, int64_t maxTime = INT64_MAX) {
  auto txn = h.log().read();
  return loadSnapshot(dir, **txn, maxSequence, maxTime,
                      [&](const std::string& w) { warnings.push_back(w); });
}

void flipByte(const std::string& path, size_t fromEnd) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const auto at = static_cast<std::streamoff>(f.tellg()) - static_cast<std::streamoff>(fromEnd);
  f.seekg(at);
  char c;
  f.get(c);
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x20));
}

TEST(Snapshot, ASnapshotAtAnyPositionThenTheRestOfTheLogEqualsAFullReplay) {
  TempDir dir;
  History h(dir.sub("log"));
  const std::string full = describe(h.replay(h.last()));
  for (uint64_t at = 1; at <= h.last(); ++at) {
    Projection before = h.replay(at);
    auto words = encodeSnapshot(before, hashAt(h, at));
    Projection restored = decodeSnapshot(words);
    EXPECT_EQ(describe(restored), describe(before)) << "round trip at " << at;
    h.applyTo(restored, at + 1, h.last());
    EXPECT_EQ(describe(restored), full) << "snapshot at " << at << ", then the rest";
    // What a restored projection writes is what the original wrote.
    auto again = encodeSnapshot(h.replay(at), hashAt(h, at));
    EXPECT_EQ(again.asBytes(), words.asBytes()) << "at " << at;
  }
}

TEST(Snapshot, AWrittenSnapshotIsLoadedBackWithItsPath) {
  TempDir dir;
  History h(dir.sub("log"));
  const uint64_t at = h.last() - 3;
  ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at)).ok());
  std::vector<std::string> warnings;
  auto loaded = load(h, dir.sub("snap"), warnings);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(loaded->projection.lastSequence(), at);
  EXPECT_EQ(describe(loaded->projection), describe(h.replay(at)));
  EXPECT_EQ(fs::path(loaded->path).filename(),
            "projection-" + std::string(20 - 2, '0') + std::to_string(at) + ".snap");
}

TEST(Snapshot, ASnapshotOfAnotherLogIsIgnoredWithAWarning) {
  TempDir dir;
  History mine(dir.sub("mine")), other(dir.sub("other"), /*variant=*/1);
  ASSERT_EQ(mine.last(), other.last());
  const uint64_t at = other.last();
  ASSERT_TRUE(writeSnapshot(dir.sub("snap"), other.replay(at), hashAt(other, at)).ok());
  std::vector<std::string> warnings;
  EXPECT_FALSE(load(mine, dir.sub("snap"), warnings).has_value());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("does not match the log"), std::string::npos) << warnings[0];
  warnings.clear();
  EXPECT_TRUE(load(other, dir.sub("snap"), warnings).has_value());
}

TEST(Snapshot, ADamagedSnapshotIsIgnoredAndTheNextOlderOneUsed) {
  TempDir dir;
  History h(dir.sub("log"));
  const uint64_t older = 5, newer = 9;
  for (uint64_t at : {older, newer}) {
    ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at)).ok());
  }
  char name[64];
  std::snprintf(name, sizeof name, "/projection-%020llu.snap", 9ull);
  flipByte(dir.sub("snap") + name, 100);
  std::vector<std::string> warnings;
  auto loaded = load(h, dir.sub("snap"), warnings);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->projection.lastSequence(), older);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
}

TEST(Snapshot, TruncatedForeignAndMisnamedFilesAreIgnored) {
  TempDir dir;
  History h(dir.sub("log"));
  const uint64_t at = 6;
  ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at)).ok());
  char name[64];
  std::snprintf(name, sizeof name, "/projection-%020llu.snap", 6ull);
  const std::string good = dir.sub("snap") + name;
  // A truncated copy, a file of text, and a whole snapshot under another sequence's name.
  fs::copy_file(good, dir.sub("snap/projection-00000000000000000007.snap"));
  fs::resize_file(dir.sub("snap/projection-00000000000000000007.snap"), fs::file_size(good) - 8);
  testing::writeFile(dir.sub("snap/projection-00000000000000000008.snap"), std::string(4096, 'x'));
  fs::copy_file(good, dir.sub("snap/projection-00000000000000000010.snap"));
  testing::writeFile(dir.sub("snap/notes.txt"), "not a snapshot");
  std::vector<std::string> warnings;
  auto loaded = load(h, dir.sub("snap"), warnings);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->projection.lastSequence(), at);
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_NE(warnings[0].find("name says sequence 10"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("not a snapshot"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[2].find("checksum"), std::string::npos) << warnings[2];
}

TEST(Snapshot, ASnapshotPastTheEndOfTheLogIsIgnored) {
  TempDir dir;
  History h(dir.sub("log"));
  const uint64_t at = h.last();
  ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at)).ok());
  // A log restored from an older backup: only its first events.
  store::EventLog::Options o;
  o.path = dir.sub("short");
  auto shorter = std::move(store::EventLog::open(o)).value();
  store::AppendRequest r;
  r.streamId = "catalog";
  r.payloads.push_back(events::catalogLoaded("sha256:c1", "/cat", {}));
  ASSERT_TRUE(shorter->append(std::move(r)).ok());
  auto txn = shorter->read();
  std::vector<std::string> warnings;
  auto loaded = loadSnapshot(dir.sub("snap"), **txn, UINT64_MAX, INT64_MAX,
                             [&](const std::string& w) { warnings.push_back(w); });
  EXPECT_FALSE(loaded.has_value());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("the log ends at 1"), std::string::npos) << warnings[0];
}

TEST(Snapshot, SnapshotsAfterTheRequestedPointArePassedOverSilently) {
  TempDir dir;
  History h(dir.sub("log"));
  for (uint64_t at : {4ull, 8ull}) {
    ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at)).ok());
  }
  std::vector<std::string> warnings;
  EXPECT_EQ(load(h, dir.sub("snap"), warnings, 7)->projection.lastSequence(), 4u);
  EXPECT_FALSE(load(h, dir.sub("snap"), warnings, 3).has_value());
  // By time: the snapshot at 8 holds events later than the time of event 4.
  const int64_t timeOf4 = h.replay(4).lastTime();
  EXPECT_EQ(load(h, dir.sub("snap"), warnings, UINT64_MAX, timeOf4)->projection.lastSequence(), 4u);
  EXPECT_TRUE(warnings.empty());
}

TEST(Snapshot, ASnapshotTakenFromTheFilesEqualsTheReplayAndBuildsOnTheLastOne) {
  TempDir dir;
  History h(dir.sub("log"));
  std::vector<std::string> warnings;
  auto first = takeSnapshot(dir.sub("snap"), h.log(), 7,
                            [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = takeSnapshot(dir.sub("snap"), h.log(), h.last(),
                             [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_TRUE(warnings.empty());
  auto loaded = load(h, dir.sub("snap"), warnings);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(describe(loaded->projection), describe(h.replay(h.last())));
  EXPECT_EQ(load(h, dir.sub("snap"), warnings, 10)->projection.lastSequence(), 7u);
  EXPECT_FALSE(
      takeSnapshot(dir.sub("snap"), h.log(), h.last() + 1, [](const std::string&) {}).ok());
}

TEST(Snapshot, WhatAWriterKilledMidWriteLeftIsRemovedAndNothingElse) {
  TempDir dir;
  History h(dir.sub("log"));
  ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(3), hashAt(h, 3)).ok());
  testing::writeFile(dir.sub("snap/projection-00000000000000000009.snap.tmp"), "half");
  testing::writeFile(dir.sub("snap/notes.txt"), "mine");
  removeSnapshotLeftovers(dir.sub("snap"));
  EXPECT_FALSE(fs::exists(dir.sub("snap/projection-00000000000000000009.snap.tmp")));
  EXPECT_TRUE(fs::exists(dir.sub("snap/notes.txt")));
  std::vector<std::string> warnings;
  EXPECT_EQ(load(h, dir.sub("snap"), warnings)->projection.lastSequence(), 3u);
}

TEST(Snapshot, OnlyTheNewestSnapshotsAreKept) {
  TempDir dir;
  History h(dir.sub("log"));
  for (uint64_t at = 1; at <= 5; ++at) {
    ASSERT_TRUE(writeSnapshot(dir.sub("snap"), h.replay(at), hashAt(h, at), 2).ok());
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.sub("snap")))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"projection-00000000000000000004.snap",
                                             "projection-00000000000000000005.snap"}));
}

}  // namespace
}  // namespace imaged::domain
