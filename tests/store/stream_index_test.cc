// The `streams` index (docs/storage.md): events reach it in batches (Options::streamIndexEvery),
// the rest is read from the log. Whatever the batching, reopening, or the reader (this process or
// a read-only one), a stream reads the same; and a format-1 store stays readable and is upgraded.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "store/event_log.h"
#include "test_util.h"

#ifndef STORE_TEST_DATA
#error "STORE_TEST_DATA must name tests/store/data"
#endif

namespace imaged::store {
namespace {

using testing::decode;
using testing::editRaw;
using testing::request;
using testing::TempDir;

std::unique_ptr<EventLog> open(const std::string& path, uint64_t indexEvery,
                               bool readOnly = false) {
  EventLog::Options o;
  o.path = path;
  o.readOnly = readOnly;
  o.streamIndexEvery = indexEvery;
  auto log = EventLog::open(std::move(o));
  EXPECT_TRUE(log.ok()) << log.error().message;
  return log.ok() ? std::move(log).value() : nullptr;
}

// What a stream holds: the sequence of each version (index 0 = version 1).
using Expected = std::map<std::string, std::vector<uint64_t>>;

// The (version, sequence) pairs forEachInStream gives from `from`, checked against the records.
std::vector<uint64_t> readStream(const ReadTxn& txn, const std::string& stream, uint64_t from) {
  std::vector<uint64_t> sequences;
  uint64_t version = std::max<uint64_t>(from, 1);
  auto s = txn.forEachInStream(stream, from, [&](const EventRef& e) {
    auto d = decode(e.words());
    EXPECT_EQ(d.streamId, stream);
    EXPECT_EQ(d.streamVersion, version) << stream << " from " << from;
    EXPECT_EQ(d.sequence, e.sequence());
    ++version;
    sequences.push_back(e.sequence());
    return true;
  });
  EXPECT_TRUE(s.ok()) << s.error().message;
  return sequences;
}

void expectStreams(const EventLog& log, const Expected& expected) {
  auto txn = log.read();
  ASSERT_TRUE(txn.ok());
  for (const auto& [stream, sequences] : expected) {
    SCOPED_TRACE(stream);
    EXPECT_EQ((*txn)->streamVersion(stream), sequences.size());
    for (uint64_t from = 0; from <= sequences.size() + 1; ++from) {
      const size_t skip = from == 0 ? 0 : std::min<size_t>(from - 1, sequences.size());
      std::vector<uint64_t> want(sequences.begin() + skip, sequences.end());
      EXPECT_EQ(readStream(**txn, stream, from), want) << "from version " << from;
    }
  }
  EXPECT_EQ((*txn)->streamVersion("no-such-stream"), 0u);
  EXPECT_EQ(readStream(**txn, "no-such-stream", 1), std::vector<uint64_t>{});
}

// Appends a random history of runs of 1-7 events to streams whose ids prefix one another
// ("a", "ab", "abc"...), so that their keys sort next to each other.
Expected appendHistory(EventLog& log, std::mt19937& rng, int appends, Expected expected = {}) {
  const std::vector<std::string> streams = {"a", "ab", "abc", "b", "image/t/x/1"};
  uint64_t next = log.lastSequence() + 1;
  for (int i = 0; i < appends; ++i) {
    const std::string& stream = streams[rng() % streams.size()];
    const size_t n = 1 + rng() % 7;
    auto& seqs = expected[stream];
    auto r = log.append(request(stream, n, "e", ExpectedVersion::exactly(seqs.size())));
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok()) break;
    EXPECT_EQ(r->firstSequence, next);
    for (size_t k = 0; k < n; ++k) seqs.push_back(next++);
  }
  return expected;
}

TEST(StreamIndex, StreamsReadTheSameWhateverTheIndexBatchAcrossReopensAndReaders) {
  for (uint64_t every : {0u, 1u, 3u, 10u, 4096u}) {
    SCOPED_TRACE("streamIndexEvery " + std::to_string(every));
    TempDir dir;
    std::mt19937 rng(every + 1);
    Expected expected;
    {
      auto log = open(dir.path(), every);
      ASSERT_TRUE(log);
      expected = appendHistory(*log, rng, 40);
      expectStreams(*log, expected);
    }
    {
      // Reopened: the events after the index are read again, and expectations still hold.
      auto log = open(dir.path(), every);
      ASSERT_TRUE(log);
      expectStreams(*log, expected);
      auto conflict = log->append(request("a", 1, "late", ExpectedVersion::exactly(0)));
      ASSERT_FALSE(conflict.ok());
      EXPECT_EQ(conflict.error().code, "E_VERSION_CONFLICT");
      expected = appendHistory(*log, rng, 25, expected);
      expectStreams(*log, expected);
      auto reader = open(dir.path(), every, /*readOnly=*/true);
      ASSERT_TRUE(reader);
      expectStreams(*reader, expected);
    }
    // A different batch size on the next open reads the same.
    auto log = open(dir.path(), every == 0 ? 7 : 0);
    ASSERT_TRUE(log);
    expectStreams(*log, expected);
  }
}

TEST(StreamIndex, TwoRequestsForOneStreamInOneBatchSeeEachOther) {
  TempDir dir;
  auto log = open(dir.path(), 1000);
  ASSERT_TRUE(log);
  std::vector<std::promise<Result<AppendResult>>> done(20);
  for (int i = 0; i < 20; ++i) {
    log->appendAsync(request("s", 2, "r" + std::to_string(i), ExpectedVersion::any()),
                     [&, i](Result<AppendResult> r) { done[i].set_value(std::move(r)); });
  }
  std::vector<uint64_t> sequences;
  for (auto& d : done) {
    auto r = d.get_future().get();
    ASSERT_TRUE(r.ok());
    sequences.push_back(r->firstSequence);
    sequences.push_back(r->lastSequence);
  }
  std::sort(sequences.begin(), sequences.end());
  std::vector<uint64_t> all;
  for (uint64_t s = 1; s <= 40; ++s) all.push_back(s);
  EXPECT_EQ(sequences, all);
  expectStreams(*log, {{"s", all}});
}

VerifyReport verified(const std::string& path) {
  auto log = open(path, 4096, /*readOnly=*/true);
  auto v = log->verify();
  EXPECT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  return *v;
}

TEST(StreamIndex, VerifyChecksTheIndexAgainstTheRecords) {
  TempDir dir;
  {
    auto log = open(dir.path(), 10);
    ASSERT_TRUE(log);
    std::mt19937 rng(3);
    appendHistory(*log, rng, 30);  // some indexed, the rest after meta.indexed
  }
  const VerifyReport good = verified(dir.path());
  EXPECT_TRUE(good.indexIntact) << good.indexProblem;
  EXPECT_GT(good.indexed, 0u);
  EXPECT_LT(good.indexed, good.events);

  // A run that names another stream's event.
  const std::string copy = dir.path() + "-copy";
  std::filesystem::copy(dir.path(), copy);
  editRaw(dir.path(), "streams", [](MDB_txn* txn, MDB_dbi dbi) {
    MDB_cursor* c;
    ASSERT_EQ(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k, d;
    ASSERT_EQ(mdb_cursor_get(c, &k, &d, MDB_FIRST), 0);
    std::string value(static_cast<const char*>(d.mv_data), d.mv_size);
    auto seq = encodeU64(decodeU64(value.data()) + 1);
    value.replace(0, 8, reinterpret_cast<const char*>(seq.data()), 8);
    MDB_val nd{value.size(), value.data()};
    ASSERT_EQ(mdb_cursor_put(c, &k, &nd, MDB_CURRENT), 0);
    mdb_cursor_close(c);
  });
  VerifyReport moved = verified(dir.path());
  EXPECT_FALSE(moved.indexIntact);
  EXPECT_NE(moved.indexProblem.find("names event"), std::string::npos) << moved.indexProblem;

  // A run that is gone: its events are in none.
  editRaw(copy, "streams", [](MDB_txn* txn, MDB_dbi dbi) {
    MDB_cursor* c;
    ASSERT_EQ(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k, d;
    ASSERT_EQ(mdb_cursor_get(c, &k, &d, MDB_LAST), 0);
    ASSERT_EQ(mdb_cursor_del(c, 0), 0);
    mdb_cursor_close(c);
  });
  VerifyReport gone = verified(copy);
  EXPECT_FALSE(gone.indexIntact);
  EXPECT_NE(gone.indexProblem.find("in no run"), std::string::npos) << gone.indexProblem;
  std::filesystem::remove_all(copy);
}

// The store in tests/store/data/format1 was written by the format-1 code (one `streams` entry
// per event, no meta.indexed): a append of 3 + b 1 + a 2 + ab 1 (idempotency key "key-1") +
// ab 1.
const Expected kFormat1 = {
    {"image/t/a/1", {1, 2, 3, 5, 6}}, {"image/t/b/1", {4}}, {"image/t/ab/1", {7, 8}}};

// The raw value under `key` of database `db` (nullptr: LMDB's main database), "" if none.
std::string rawValue(const std::string& path, const char* db, const char* key) {
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  std::string value;
  if (mdb_env_open(env, path.c_str(), MDB_RDONLY, 0600) == 0) {
    MDB_txn* txn;
    MDB_dbi dbi;
    mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    if (mdb_dbi_open(txn, db, 0, &dbi) == 0) {
      MDB_val k{std::strlen(key), const_cast<char*>(key)}, d;
      if (mdb_get(txn, dbi, &k, &d) == 0) value.assign(static_cast<char*>(d.mv_data), d.mv_size);
    }
    mdb_txn_abort(txn);
  }
  mdb_env_close(env);
  return value;
}

uint64_t rawFormat(const std::string& path) {
  const std::string v = rawValue(path, "meta", "format");
  return v.size() == 8 ? decodeU64(v.data()) : 0;
}

// On an upgraded fixture (both made events 7-8 with the key "key-1"): the key is honoured, a
// random history appends after it, and every stream reads as expected.
Expected continueFixture(EventLog& log, Expected expected, unsigned seed) {
  auto again = request("image/t/ab/1", 1, "ab1");
  again.idempotencyKey = "key-1";
  auto dup = log.append(std::move(again));
  EXPECT_TRUE(dup.ok());
  if (dup.ok()) {
    EXPECT_TRUE(dup->duplicate);
    EXPECT_EQ(dup->firstSequence, 7u);
  }
  std::mt19937 rng(seed);
  expected = appendHistory(log, rng, 12, expected);
  expectStreams(log, expected);
  return expected;
}

TEST(StreamIndex, AFormat1StoreIsReadAsItIsAndUpgradedWhenOpenedForWriting) {
  TempDir dir;
  std::filesystem::copy_file(std::string(STORE_TEST_DATA) + "/format1/data.mdb",
                             dir.path() + "/data.mdb");
  ASSERT_EQ(rawFormat(dir.path()), 1u);
  {
    auto reader = open(dir.path(), 4096, /*readOnly=*/true);
    ASSERT_TRUE(reader);
    expectStreams(*reader, kFormat1);
    auto v = reader->verify();
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->intact) << v->problem;
  }
  EXPECT_EQ(rawFormat(dir.path()), 1u) << "a read-only open changed the store";

  Expected expected = kFormat1;
  {
    auto log = open(dir.path(), 4);
    ASSERT_TRUE(log);
    EXPECT_EQ(rawFormat(dir.path()), kFormatVersion);
    expectStreams(*log, expected);
    expected = continueFixture(*log, expected, 7);
    auto v = log->verify();
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->intact) << v->problem;
  }
  auto log = open(dir.path(), 4096);
  ASSERT_TRUE(log);
  expectStreams(*log, expected);
}

// What the format-2 fixture holds (tests/store/data/format2, written by the format-2 code with
// an index batch of 4: events 1-8 are in the index, 9 is the tail; "key-1" made 7-8).
const Expected kFormat2 = {
    {"image/t/a/1", {1, 2, 3, 5, 6}}, {"image/t/b/1", {4, 9}}, {"image/t/ab/1", {7, 8}}};

TEST(StreamIndex, AFormat2StoreIsReadAsItIsAndUpgradedWhenOpenedForWriting) {
  TempDir dir;
  std::filesystem::copy_file(std::string(STORE_TEST_DATA) + "/format2/data.mdb",
                             dir.path() + "/data.mdb");
  ASSERT_EQ(rawFormat(dir.path()), 2u);
  const std::string head = rawValue(dir.path(), "meta", "head");
  ASSERT_EQ(head.size(), 8 + kHashSize);
  ASSERT_EQ(decodeU64(head.data()), 9u);

  // A reader of this code, opened before the upgrade and still open after it.
  auto reader = open(dir.path(), 4096, /*readOnly=*/true);
  ASSERT_TRUE(reader);
  expectStreams(*reader, kFormat2);
  auto v = reader->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_EQ(v->indexed, 8u);
  EXPECT_EQ(rawFormat(dir.path()), 2u) << "a read-only open changed the store";

  Expected expected = kFormat2;
  {
    auto log = open(dir.path(), 4);
    ASSERT_TRUE(log);
    // Format 3: the head moved to the main database, unchanged, and left `meta`.
    EXPECT_EQ(rawFormat(dir.path()), kFormatVersion);
    EXPECT_EQ(rawValue(dir.path(), nullptr, "imaged.head"), head);
    EXPECT_EQ(rawValue(dir.path(), "meta", "head"), "");
    EXPECT_EQ(log->lastSequence(), 9u);
    expectStreams(*log, expected);
    expected = continueFixture(*log, expected, 9);
    EXPECT_EQ(decodeU64(rawValue(dir.path(), nullptr, "imaged.head").data()), log->lastSequence());
  }
  // The reader opened at format 2 sees the upgraded log whole.
  expectStreams(*reader, expected);
  v = reader->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_GT(v->events, 9u);
  reader.reset();

  auto log = open(dir.path(), 4096);
  ASSERT_TRUE(log);
  expectStreams(*log, expected);
}

}  // namespace
}  // namespace imaged::store
