#include "store/event_log.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <lmdb.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <map>

#include <sys/wait.h>

#include "test_util.h"

namespace imaged::store {
namespace {

using testing::decode;
using testing::editRaw;
using testing::openLog;
using testing::request;
using testing::TempDir;

std::vector<testing::Decoded> readAll(const EventLog& log, uint64_t from = 1) {
  std::vector<testing::Decoded> out;
  auto txn = log.read();
  EXPECT_TRUE(txn.ok());
  auto s = (*txn)->forEach(from, [&](const EventRef& e) {
    out.push_back(decode(e.words()));
    return true;
  });
  EXPECT_TRUE(s.ok());
  return out;
}

std::string getRaw(MDB_txn* txn, MDB_dbi dbi, uint64_t seq) {
  auto k = encodeU64(seq);
  MDB_val key{8, k.data()}, data;
  EXPECT_EQ(mdb_get(txn, dbi, &key, &data), 0);
  return std::string(static_cast<const char*>(data.mv_data), data.mv_size);
}

void putRaw(MDB_txn* txn, MDB_dbi dbi, uint64_t seq, const std::string& bytes) {
  auto k = encodeU64(seq);
  MDB_val key{8, k.data()}, data{bytes.size(), const_cast<char*>(bytes.data())};
  ASSERT_EQ(mdb_put(txn, dbi, &key, &data, 0), 0);
}

TEST(EventLog, FirstAppendGetsSequenceOneAndStreamVersionOne) {
  TempDir dir;
  auto log = openLog(dir.path());
  auto r = log->append(request("s", 1));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, (AppendResult{1, 1, 1, false}));
  EXPECT_EQ(log->lastSequence(), 1u);
}

TEST(EventLog, SequencesAreGaplessAcrossStreamsAndVersionsCountPerStream) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_EQ(*log->append(request("a", 2, "a1")), (AppendResult{1, 2, 2, false}));
  ASSERT_EQ(*log->append(request("b", 1, "b1")), (AppendResult{3, 3, 1, false}));
  ASSERT_EQ(*log->append(request("a", 3, "a2")), (AppendResult{4, 6, 5, false}));

  auto all = readAll(*log);
  ASSERT_EQ(all.size(), 6u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].sequence, i + 1);
  EXPECT_EQ(all[3].streamId, "a");
  EXPECT_EQ(all[3].streamVersion, 3u);
  EXPECT_EQ(all[3].reason, "a2-0");
  EXPECT_EQ(all[2].streamId, "b");
  EXPECT_EQ(all[2].streamVersion, 1u);
}

TEST(EventLog, EnvelopeCarriesActorCorrelationAndIdempotencyKey) {
  TempDir dir;
  auto log = openLog(dir.path());
  auto req = request("s", 1, "x");
  req.idempotencyKey = "key-1";
  ASSERT_TRUE(log->append(std::move(req)).ok());
  auto txn = log->read();
  auto ev = (*txn)->get(1);
  ASSERT_TRUE(ev.ok());
  capnp::FlatArrayMessageReader reader(ev->words);
  auto e = reader.getRoot<schema::Event>();
  EXPECT_EQ(std::string(e.getActor().getTenant()), "acme");
  EXPECT_EQ(e.getActor().getUid(), 1000u);
  EXPECT_EQ(std::string(e.getActor().getClient()), "test");
  EXPECT_EQ(std::string(e.getCorrelationId()), "corr-x");
  EXPECT_EQ(std::string(e.getIdempotencyKey()), "key-1");
  EXPECT_EQ(e.getPrevHash().size(), kHashSize);
  EXPECT_EQ(e.getHash().size(), kHashSize);
}

TEST(EventLog, NoStreamExpectationFailsOnceTheStreamExistsAndWritesNothing) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 1, "a", ExpectedVersion::noStream())).ok());
  auto second = log->append(request("s", 1, "b", ExpectedVersion::noStream()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, "E_VERSION_CONFLICT");
  EXPECT_EQ(log->lastSequence(), 1u);
  EXPECT_EQ(readAll(*log).size(), 1u);
}

TEST(EventLog, ExactExpectationMustMatchTheStreamsLastVersion) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 2, "a", ExpectedVersion::exactly(0))).ok());
  auto stale = log->append(request("s", 1, "b", ExpectedVersion::exactly(1)));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, "E_VERSION_CONFLICT");
  auto right = log->append(request("s", 1, "c", ExpectedVersion::exactly(2)));
  ASSERT_TRUE(right.ok());
  EXPECT_EQ(right->streamVersion, 3u);
  EXPECT_EQ(right->firstSequence, 3u);  // the conflict consumed no sequence number
}

TEST(EventLog, ReusedIdempotencyKeyReturnsTheFirstResultAndWritesNothing) {
  TempDir dir;
  auto log = openLog(dir.path());
  auto first = request("s", 2, "a");
  first.idempotencyKey = "create-web";
  auto r1 = log->append(std::move(first));
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(log->append(request("t", 1, "other")).ok());

  auto retry = request("s", 2, "a", ExpectedVersion::noStream());  // would conflict if applied
  retry.idempotencyKey = "create-web";
  auto r2 = log->append(std::move(retry));
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_TRUE(r2->duplicate);
  EXPECT_EQ(r2->firstSequence, r1->firstSequence);
  EXPECT_EQ(r2->lastSequence, r1->lastSequence);
  EXPECT_EQ(r2->streamVersion, r1->streamVersion);
  EXPECT_EQ(log->lastSequence(), 3u);
}

TEST(EventLog, IdempotencyKeySurvivesReopen) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    auto r = request("s", 1);
    r.idempotencyKey = "k";
    ASSERT_TRUE(log->append(std::move(r)).ok());
  }
  auto log = openLog(dir.path());
  auto r = request("s", 1);
  r.idempotencyKey = "k";
  auto again = log->append(std::move(r));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(log->lastSequence(), 1u);
}

TEST(EventLog, ConflictingRequestInAConcurrentBatchDoesNotAffectTheOthers) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  std::promise<void> allDone;
  std::atomic<int> left{3};
  std::vector<Result<AppendResult>> results(3, Error{});
  auto done = [&](int i) {
    return [&, i](Result<AppendResult> r) {
      results[i] = std::move(r);
      if (--left == 0) allDone.set_value();
    };
  };
  log->appendAsync(request("s", 1, "ok1", ExpectedVersion::exactly(1)), done(0));
  log->appendAsync(request("s", 1, "bad", ExpectedVersion::exactly(1)), done(1));
  log->appendAsync(request("t", 1, "ok2"), done(2));
  allDone.get_future().wait();
  EXPECT_TRUE(results[0].ok());
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error().code, "E_VERSION_CONFLICT");
  EXPECT_TRUE(results[2].ok());
  EXPECT_EQ(log->lastSequence(), 3u);
  auto v = log->verify();
  EXPECT_TRUE(v.ok() && v->intact);
}

TEST(EventLog, MalformedRequestsAreRejectedAndWriteNothing) {
  TempDir dir;
  auto log = openLog(dir.path());
  auto expectInvalid = [&](AppendRequest r) {
    auto res = log->append(std::move(r));
    ASSERT_FALSE(res.ok());
    EXPECT_EQ(res.error().code, "E_INVALID_ARGUMENT");
  };
  expectInvalid(request("", 1));
  expectInvalid(request(std::string("a\0b", 3), 1));
  expectInvalid(request(std::string(kMaxStreamIdBytes + 1, 's'), 1));
  expectInvalid(request("s", 0));
  auto longKey = request("s", 1);
  longKey.idempotencyKey = std::string(kMaxIdempotencyKeyBytes + 1, 'k');
  expectInvalid(std::move(longKey));

  // A payload that is not a Cap'n Proto message: the whole request fails, its good event too.
  auto garbage = request("s", 1);
  auto junk = kj::heapArray<capnp::word>(3);
  std::memset(static_cast<void*>(junk.begin()), 0xEE, 3 * sizeof(capnp::word));
  garbage.payloads.push_back(std::move(junk));
  expectInvalid(std::move(garbage));

  EXPECT_EQ(log->lastSequence(), 0u);
  EXPECT_TRUE(readAll(*log).empty());
}

TEST(EventLog, ReadsOneStreamFromAVersion) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("a", 2, "a1")).ok());
  ASSERT_TRUE(log->append(request("ab", 1, "ab")).ok());
  ASSERT_TRUE(log->append(request("a", 2, "a2")).ok());
  auto txn = log->read();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ((*txn)->streamVersion("a"), 4u);
  EXPECT_EQ((*txn)->streamVersion("ab"), 1u);
  EXPECT_EQ((*txn)->streamVersion("nope"), 0u);
  std::vector<std::string> reasons;
  auto s = (*txn)->forEachInStream("a", 2, [&](const EventRef& e) {
    reasons.push_back(decode(e.words()).reason);
    return true;
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(reasons, (std::vector<std::string>{"a1-1", "a2-0", "a2-1"}));
}

TEST(EventLog, ReadsFromASequenceNumberAndStopsWhenAsked) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 10)).ok());
  auto from4 = readAll(*log, 4);
  ASSERT_EQ(from4.size(), 7u);
  EXPECT_EQ(from4.front().sequence, 4u);
  auto txn = log->read();
  int seen = 0;
  ASSERT_TRUE((*txn)->forEach(1, [&](const EventRef&) { return ++seen < 3; }).ok());
  EXPECT_EQ(seen, 3);
}

TEST(EventLog, StoredRecordsAreWordAlignedInTheMapSoReadsAreZeroCopy) {
  TempDir dir;
  auto log = openLog(dir.path());
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(log->append(request("s" + std::to_string(i % 7), 1 + i % 4)).ok());
  auto txn = log->read();
  int misaligned = 0;
  ASSERT_TRUE((*txn)
                  ->forEach(1,
                            [&](const EventRef& e) {
                              if (reinterpret_cast<uintptr_t>(e.words().begin()) % 8 != 0)
                                ++misaligned;
                              return true;
                            })
                  .ok());
  EXPECT_EQ(misaligned, 0);
}

TEST(EventLog, EventTimeNeverDecreasesEvenWhenTheClockGoesBack) {
  TempDir dir;
  int64_t fake = 1'000'000;
  EventLog::Options o;
  o.path = dir.path();
  o.clock = [&] { return fake; };
  auto log = std::move(EventLog::open(o)).value();
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  fake = 500;  // clock stepped back
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  fake = 2'000'000;
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  auto all = readAll(*log);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].time, 1'000'000);
  EXPECT_EQ(all[1].time, 1'000'000);
  EXPECT_EQ(all[2].time, 2'000'000);
}

TEST(EventLog, ReopenKeepsEveryEventAndContinuesTheChain) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 3)).ok());
  }
  auto log = openLog(dir.path());
  EXPECT_EQ(log->lastSequence(), 3u);
  auto r = log->append(request("s", 1, "after"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (AppendResult{4, 4, 4, false}));
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_EQ(v->events, 4u);
  auto txn = log->read();
  EXPECT_EQ(v->head, (*txn)->headHash());
}

TEST(EventLog, VerifyOfAnEmptyLogIsIntact) {
  TempDir dir;
  auto log = openLog(dir.path());
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact);
  EXPECT_EQ(v->events, 0u);
}

TEST(EventLog, VerifyNamesAnEventWhoseBytesChanged) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    for (int i = 0; i < 10; ++i)
      ASSERT_TRUE(log->append(request("s", 1, "e" + std::to_string(i))).ok());
  }
  editRaw(dir.path(), "events", [](MDB_txn* txn, MDB_dbi dbi) {
    std::string bytes = getRaw(txn, dbi, 6);
    auto pos = bytes.find("e5-0");  // the payload text
    ASSERT_NE(pos, std::string::npos);
    bytes[pos] = 'E';
    putRaw(txn, dbi, 6, bytes);
  });
  auto log = openLog(dir.path());
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->firstBad, 6u);
  EXPECT_NE(v->problem.find("bytes changed"), std::string::npos) << v->problem;
  EXPECT_EQ(v->events, 5u);
}

TEST(EventLog, VerifyNamesAGapWhereARecordWasDeleted) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 8)).ok());
  }
  editRaw(dir.path(), "events", [](MDB_txn* txn, MDB_dbi dbi) {
    auto k = encodeU64(4);
    MDB_val key{8, k.data()};
    ASSERT_EQ(mdb_del(txn, dbi, &key, nullptr), 0);
  });
  auto log = openLog(dir.path());
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->firstBad, 4u);
  EXPECT_NE(v->problem.find("gap"), std::string::npos) << v->problem;
}

TEST(EventLog, VerifyNamesSwappedRecords) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 8)).ok());
  }
  editRaw(dir.path(), "events", [](MDB_txn* txn, MDB_dbi dbi) {
    std::string three = getRaw(txn, dbi, 3), four = getRaw(txn, dbi, 4);
    putRaw(txn, dbi, 3, four);
    putRaw(txn, dbi, 4, three);
  });
  auto log = openLog(dir.path());
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->firstBad, 3u);
}

TEST(EventLog, VerifyNamesARecordThatDoesNotDecode) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 5)).ok());
  }
  editRaw(dir.path(), "events",
          [](MDB_txn* txn, MDB_dbi dbi) { putRaw(txn, dbi, 2, std::string(24, '\xff')); });
  auto log = openLog(dir.path());
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->intact);
  EXPECT_EQ(v->firstBad, 2u);
  EXPECT_NE(v->problem.find("decode"), std::string::npos) << v->problem;
}

TEST(EventLog, OpenRefusesAHeadThatDoesNotMatchTheLastEvent) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 3)).ok());
  }
  editRaw(dir.path(), "events", [](MDB_txn* txn, MDB_dbi dbi) {
    std::string bytes = getRaw(txn, dbi, 3);
    auto offset = locateHash(
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(bytes.data()), bytes.size() / 8));
    ASSERT_TRUE(offset.ok());
    bytes[*offset] ^= 0x01;
    putRaw(txn, dbi, 3, bytes);
  });
  EventLog::Options o;
  o.path = dir.path();
  auto log = EventLog::open(o);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().code, "E_STORE_CORRUPT");
}

TEST(EventLog, StoreFromANewerFormatIsRefusedAndLeftUntouched) {
  TempDir dir;
  {
    auto log = openLog(dir.path());
    ASSERT_TRUE(log->append(request("s", 2)).ok());
  }
  {
    MDB_env* env;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    ASSERT_EQ(mdb_env_open(env, dir.path().c_str(), 0, 0600), 0);
    MDB_txn* txn;
    mdb_txn_begin(env, nullptr, 0, &txn);
    MDB_dbi meta;
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    auto v = encodeU64(kFormatVersion + 1);
    MDB_val key{6, const_cast<char*>("format")}, data{8, v.data()};
    ASSERT_EQ(mdb_put(txn, meta, &key, &data, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  auto readFile = [&] {
    std::ifstream f(dir.path() + "/data.mdb", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string before = readFile();
  for (bool readOnly : {false, true}) {
    EventLog::Options o;
    o.path = dir.path();
    o.readOnly = readOnly;
    auto log = EventLog::open(o);
    ASSERT_FALSE(log.ok());
    EXPECT_EQ(log.error().code, "E_STORE_FORMAT");
    EXPECT_NE(log.error().message.find("newer"), std::string::npos) << log.error().message;
  }
  EXPECT_EQ(readFile(), before);
}

TEST(EventLog, ReadOnlyOpenOfAMissingStoreSaysNotFound) {
  TempDir dir;
  EventLog::Options o;
  o.path = dir.sub("absent");
  o.readOnly = true;
  auto log = EventLog::open(o);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().code, "E_NOT_FOUND");
  EXPECT_FALSE(std::filesystem::exists(o.path));
}

TEST(EventLog, ReadOnlyLogRefusesAppends) {
  TempDir dir;
  { ASSERT_TRUE(openLog(dir.path())->append(request("s", 1)).ok()); }
  auto log = openLog(dir.path(), /*readOnly=*/true);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->lastSequence(), 1u);
  auto r = log->append(request("s", 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "E_READ_ONLY");
}

TEST(EventLog, MapGrowsInsteadOfFailingWhenFull) {
  TempDir dir;
  auto log = openLog(dir.path(), false, /*initialMapSize=*/64 * 1024);
  const size_t before = log->mapSize();
  for (int i = 0; i < 200; ++i) {
    auto r = log->append(request("s" + std::to_string(i % 5), 20, std::string(200, 'x')));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  EXPECT_GT(log->mapSize(), before);
  EXPECT_EQ(log->lastSequence(), 4000u);
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
}

// Requests of 512 events or more are built on a helper thread while the writer chains and
// stores them (EncodePipeline): the result must be the same log, also when the map has to grow
// half-way through (the batch is then built again) and beside small requests in one batch.
TEST(EventLog, LargeRequestsAreStoredWholeInOrderAndChained) {
  TempDir dir;
  auto log = openLog(dir.path(), false, /*initialMapSize=*/64 * 1024);
  const size_t before = log->mapSize();
  std::vector<std::promise<Result<AppendResult>>> done(4);
  const size_t sizes[] = {1, 1500, 3, 777};
  for (size_t i = 0; i < 4; ++i) {
    log->appendAsync(request("s" + std::to_string(i % 2), sizes[i], "r" + std::to_string(i)),
                     [&, i](Result<AppendResult> r) { done[i].set_value(std::move(r)); });
  }
  std::vector<AppendResult> results;
  for (auto& d : done) {
    auto r = d.get_future().get();
    ASSERT_TRUE(r.ok()) << r.error().message;
    results.push_back(*r);
  }
  EXPECT_GT(log->mapSize(), before);
  auto all = readAll(*log);
  ASSERT_EQ(all.size(), 1 + 1500 + 3 + 777u);
  std::map<std::string, uint64_t> versions;
  for (size_t i = 0; i < 4; ++i) {
    const std::string stream = "s" + std::to_string(i % 2);
    EXPECT_EQ(results[i].lastSequence - results[i].firstSequence + 1, sizes[i]);
    for (uint64_t seq = results[i].firstSequence; seq <= results[i].lastSequence; ++seq) {
      const auto& e = all[seq - 1];
      EXPECT_EQ(e.sequence, seq);
      EXPECT_EQ(e.streamId, stream);
      EXPECT_EQ(e.streamVersion, ++versions[stream]);
      EXPECT_EQ(e.reason,
                "r" + std::to_string(i) + "-" + std::to_string(seq - results[i].firstSequence));
    }
  }
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_EQ(v->events, all.size());
}

TEST(EventLog, ReaderSeesItsSnapshotWhileTheWriterGoesOn) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 2)).ok());
  auto txn = log->read();
  ASSERT_TRUE(txn.ok());
  ASSERT_TRUE(log->append(request("s", 3)).ok());  // a live ReadTxn does not block the writer
  EXPECT_EQ((*txn)->lastSequence(), 2u);
  int n = 0;
  ASSERT_TRUE((*txn)->forEach(1, [&](const EventRef&) { return ++n, true; }).ok());
  EXPECT_EQ(n, 2);
  EXPECT_EQ(log->lastSequence(), 5u);
}

TEST(EventLog, ClosingAnswersEveryQueuedAppend) {
  TempDir dir;
  std::atomic<int> answered{0};
  {
    auto log = openLog(dir.path());
    for (int i = 0; i < 100; ++i) {
      log->appendAsync(request("s", 1), [&](Result<AppendResult> r) {
        EXPECT_TRUE(r.ok());
        ++answered;
      });
    }
  }
  EXPECT_EQ(answered.load(), 100);
  EXPECT_EQ(openLog(dir.path())->lastSequence(), 100u);
}

TEST(EventLog, StaleReaderSlotOfAKilledProcessIsCleared) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  {
    testing::Child reader({STORE_TOOL, "hold-reader", dir.path()});
    std::string line;
    ASSERT_TRUE(reader.readLine(&line));
    ASSERT_EQ(line, "ready 1");
    reader.kill(SIGKILL);
    reader.wait();
  }
  EXPECT_EQ(log->clearStaleReaders(), 1);
  EXPECT_EQ(log->clearStaleReaders(), 0);
}

TEST(EventLog, ReadOnlyProcessSeesAConsistentPrefixWhileTheDaemonWrites) {
  TempDir dir;
  auto log = openLog(dir.path());
  ASSERT_TRUE(log->append(request("s", 1)).ok());
  constexpr uint64_t kTotal = 3000;
  testing::Child watcher({STORE_TOOL, "watch", dir.path(), std::to_string(kTotal)});
  for (uint64_t n = 1; n < kTotal;) {
    auto r = log->append(request("s" + std::to_string(n % 3), 1 + n % 4));
    ASSERT_TRUE(r.ok());
    n = r->lastSequence;
  }
  std::string line, last;
  while (watcher.readLine(&line)) last = line;
  const int status = watcher.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << last;
  EXPECT_EQ(last.rfind("ok ", 0), 0u) << last;
}

}  // namespace
}  // namespace imaged::store
