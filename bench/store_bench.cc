// Benchmarks of store/ against raw LMDB doing the same I/O: same value sizes, same commit
// batching, same sync policy, same data directory.
// Usage: store_bench DATA_DIR [--quick] [--only concurrent|bulk|scan]
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <lmdb.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_lmdb.h"
#include "bench_util.h"
#include "store/event_log.h"

using namespace imaged;
using namespace imaged::store;
using imaged::bench::median;
using imaged::bench::report;
using imaged::bench::Stopwatch;

namespace {

kj::Array<capnp::word> payloadOf(size_t bytes) {
  capnp::MallocMessageBuilder b;
  b.initRoot<schema::Payload>().initImageDeleted().setReason(std::string(bytes, 'x'));
  return capnp::messageToFlatArray(b);
}

// A 256-byte event: the payload's text is sized so that the payload message is 256 bytes.
kj::Array<capnp::word> payload256() {
  return payloadOf(256 - 4 * 8 - 1);
}

std::unique_ptr<EventLog> openLog(const std::string& path) {
  EventLog::Options o;
  o.path = path;
  o.initialMapSize = size_t{8} << 30;
  auto log = EventLog::open(std::move(o));
  if (!log.ok()) throw std::runtime_error(log.error().message);
  return std::move(log).value();
}

size_t storedRecordBytes(const EventLog& log) {
  auto txn = log.read();
  auto e = (*txn)->get(1);
  return e->words.size() * sizeof(capnp::word);
}

// A raw LMDB environment at `path` (created) with an `events` database, as the store sizes its
// map for the benchmarks.
MDB_env* openRaw(const std::string& path, MDB_dbi* dbi) {
  std::filesystem::create_directories(path);
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 4);
  mdb_env_set_mapsize(env, size_t{8} << 30);
  if (mdb_env_open(env, path.c_str(), MDB_NOTLS, 0600) != 0) throw std::runtime_error("raw open");
  MDB_txn* txn;
  mdb_txn_begin(env, nullptr, 0, &txn);
  mdb_dbi_open(txn, "events", MDB_CREATE, dbi);
  mdb_txn_commit(txn);
  return env;
}

// Raw LMDB: `total` values of `valueBytes` under u64 big-endian keys with MDB_APPEND, `batch`
// per durable commit. Returns values per second.
double rawAppend(const std::string& path, uint64_t total, size_t batch, size_t valueBytes) {
  MDB_dbi dbi;
  MDB_env* env = openRaw(path, &dbi);
  MDB_txn* txn;
  std::vector<char> value(valueBytes, 'v');
  Stopwatch sw;
  uint64_t seq = 0;
  while (seq < total) {
    mdb_txn_begin(env, nullptr, 0, &txn);
    for (size_t i = 0; i < batch && seq < total; ++i) {
      auto k = encodeU64(++seq);
      MDB_val key{8, k.data()}, data{value.size(), value.data()};
      if (mdb_put(txn, dbi, &key, &data, MDB_APPEND) != 0) throw std::runtime_error("raw put");
    }
    if (mdb_txn_commit(txn) != 0) throw std::runtime_error("raw commit");
  }
  const double rate = total / sw.seconds();
  mdb_env_close(env);
  return rate;
}

// Raw LMDB cursor scan touching every value's bytes. Returns values per second.
double rawScan(const std::string& path, uint64_t* count) {
  uint64_t sum = 0;
  const double rate = imaged::bench::rawScan(path, count, [&](const uint8_t* p, size_t n) {
    sum += p[n - 1] + n;  // touch the value
  });
  if (sum == 0) *count += 1;
  return rate;
}

// One round of benchConcurrent's appends into a fresh log at `path`: events/s, and the events
// per commit and record size that the raw baseline then copies.
double concurrentRound(const std::string& path, int appenders, int perThread, double* averageBatch,
                       size_t* recordBytes) {
  std::filesystem::remove_all(path);
  auto log = openLog(path);
  auto one = payload256();
  std::atomic<bool> failed{false};
  Stopwatch sw;
  std::vector<std::thread> threads;
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&, t] {
      pthread_setname_np(pthread_self(), "append-store");
      for (int i = 0; i < perThread; ++i) {
        AppendRequest r;
        r.streamId = "image/bench/" + std::to_string(t);
        r.payloads.push_back(kj::heapArray<capnp::word>(one.asPtr()));
        if (!log->append(std::move(r)).ok()) failed = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  const double rate = appenders * perThread / sw.seconds();
  if (failed) throw std::runtime_error("an append failed");
  auto stats = log->stats();
  *averageBatch = static_cast<double>(stats.events) / stats.commits;
  *recordBytes = storedRecordBytes(*log);
  return rate;
}

// The same appenders on the simplest group commit one could write on raw LMDB: a queue, one
// writer thread (the queued values, MDB_APPEND, one durable commit) and one thread that answers
// the callers (each waits on a promise, as EventLog::append's do). No records are built, chained
// or indexed. What 64 blocking callers cost on this machine, before the store does any work of
// its own: an upper bound for store.append.concurrent64 (each against raw LMDB with its own
// batching; `of_group_commit` is the ratio of the two ratios). Returns values per second.
double rawGroupCommitRound(const std::string& path, int appenders, int perThread, size_t valueBytes,
                           double* averageBatch) {
  std::filesystem::remove_all(path);
  MDB_dbi dbi;
  MDB_env* env = openRaw(path, &dbi);

  std::mutex mutex;
  std::condition_variable queuedCv, answerCv;
  std::vector<std::promise<void>*> queue, answers;
  bool closing = false, writerDone = false;
  uint64_t commits = 0;
  std::thread writer([&] {
    pthread_setname_np(pthread_self(), "group-writer");
    const std::vector<char> value(valueBytes, 'v');
    uint64_t seq = 0;
    for (;;) {
      std::vector<std::promise<void>*> batch;
      {
        std::unique_lock lk(mutex);
        queuedCv.wait(lk, [&] { return !queue.empty() || closing; });
        if (queue.empty()) break;
        batch.swap(queue);
      }
      MDB_txn* t;
      mdb_txn_begin(env, nullptr, 0, &t);
      for (size_t i = 0; i < batch.size(); ++i) {
        auto k = encodeU64(++seq);
        MDB_val key{8, k.data()}, data{value.size(), const_cast<char*>(value.data())};
        if (mdb_put(t, dbi, &key, &data, MDB_APPEND) != 0) throw std::runtime_error("raw put");
      }
      if (mdb_txn_commit(t) != 0) throw std::runtime_error("raw commit");
      {
        std::lock_guard lk(mutex);
        ++commits;
        answers.insert(answers.end(), batch.begin(), batch.end());
      }
      answerCv.notify_one();
    }
    std::lock_guard lk(mutex);
    writerDone = true;
    answerCv.notify_one();
  });
  std::thread answerer([&] {
    pthread_setname_np(pthread_self(), "group-answer");
    for (;;) {
      std::vector<std::promise<void>*> ready;
      {
        std::unique_lock lk(mutex);
        answerCv.wait(lk, [&] { return !answers.empty() || writerDone; });
        if (answers.empty()) break;
        ready.swap(answers);
      }
      for (auto* p : ready) p->set_value();
    }
  });
  Stopwatch sw;
  std::vector<std::thread> threads;
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&] {
      pthread_setname_np(pthread_self(), "append-group");
      for (int i = 0; i < perThread; ++i) {
        std::promise<void> done;
        auto answered = done.get_future();
        {
          std::lock_guard lk(mutex);
          queue.push_back(&done);
        }
        queuedCv.notify_one();
        answered.get();
      }
    });
  }
  for (auto& th : threads) th.join();
  const double rate = appenders * perThread / sw.seconds();
  {
    std::lock_guard lk(mutex);
    closing = true;
  }
  queuedCv.notify_one();
  writer.join();
  answerer.join();
  *averageBatch = static_cast<double>(appenders) * perThread / commits;
  mdb_env_close(env);
  return rate;
}

void benchConcurrent(const std::string& dir, bool quick) {
  // Rounds, alternating with the raw baseline (which copies the round's batching) and the bare
  // group commit, and the median of each side: a durable commit's cost here moves by 30 % from
  // one second to the next, whichever side runs then (nine rounds: five left the medians of
  // consecutive runs 0.65-0.94 apart).
  constexpr int kAppenders = 64;
  const int perThread = quick ? 40 : 200, rounds = quick ? 1 : 9;
  const std::string ours = dir + "/concurrent64", raw = dir + "/concurrent64-raw",
                    group = dir + "/concurrent64-group";
  std::vector<double> rates, bases, batches, groups, groupBases, groupBatches;
  size_t recordBytes = 0;
  // Raw LMDB with a side's batching, into a fresh directory.
  auto rawLike = [&](double averageBatch) {
    std::filesystem::remove_all(raw);
    return rawAppend(raw, kAppenders * perThread, static_cast<size_t>(averageBatch + 0.5),
                     recordBytes);
  };
  for (int i = 0; i < rounds; ++i) {
    double averageBatch;
    rates.push_back(concurrentRound(ours, kAppenders, perThread, &averageBatch, &recordBytes));
    batches.push_back(averageBatch);
    bases.push_back(rawLike(averageBatch));
    groups.push_back(rawGroupCommitRound(group, kAppenders, perThread, recordBytes, &averageBatch));
    groupBatches.push_back(averageBatch);
    groupBases.push_back(rawLike(averageBatch));
  }
  std::filesystem::remove_all(group);
  const double ratio = median(rates) / median(bases),
               groupRatio = median(groups) / median(groupBases);
  report("store.append.concurrent64", "events/s", median(rates), "lmdb.mdb_put.append",
         median(bases),
         "\"events_per_commit\": " + std::to_string(median(batches)) + ", \"record_bytes\": " +
             std::to_string(recordBytes) + ", \"rounds\": " + std::to_string(rounds) +
             ", \"of_group_commit\": " + std::to_string(ratio / groupRatio));
  report("lmdb.group_commit64", "events/s", median(groups), "lmdb.mdb_put.append",
         median(groupBases),
         "\"events_per_commit\": " + std::to_string(median(groupBatches)) + ", \"record_bytes\": " +
             std::to_string(recordBytes) + ", \"rounds\": " + std::to_string(rounds));
}

void benchBulk(const std::string& dir, bool quick, uint64_t totalEvents) {
  constexpr size_t kBatch = 10'000;
  const std::string ours = dir + "/bulk", raw = dir + "/bulk-raw";
  double rate;
  size_t recordBytes;
  {
    auto log = openLog(ours);
    auto one = payload256();
    // Only the appends are timed: the raw baseline's values are ready before it starts too.
    double seconds = 0;
    for (uint64_t done = 0; done < totalEvents; done += kBatch) {
      AppendRequest r;
      r.streamId = "image/bench/" + std::to_string(done / kBatch % 100);
      for (size_t i = 0; i < kBatch; ++i)
        r.payloads.push_back(kj::heapArray<capnp::word>(one.asPtr()));
      Stopwatch sw;
      auto res = log->append(std::move(r));
      seconds += sw.seconds();
      if (!res.ok()) throw std::runtime_error(res.error().message);
    }
    rate = totalEvents / seconds;
    recordBytes = storedRecordBytes(*log);
  }
  const double base = rawAppend(raw, totalEvents, kBatch, recordBytes);
  report("store.append.bulk", "events/s", rate, "lmdb.mdb_put.append", base,
         "\"events_per_commit\": 10000, \"record_bytes\": " + std::to_string(recordBytes));
  (void)quick;
}

// Our scan: a read transaction of the store, decoding every event.
double storeScan(const std::string& path, uint64_t* count) {
  auto log = openLog(path);
  auto txn = log->read();
  uint64_t checksum = 0, n = 0;
  Stopwatch sw;
  auto s = (*txn)->forEach(1, [&](const EventRef& e) {
    capnp::FlatArrayMessageReader reader(e.words());
    auto ev = reader.getRoot<schema::Event>();
    checksum += ev.getSequence() + ev.getStreamVersion() + static_cast<uint64_t>(ev.getTime()) +
                static_cast<uint16_t>(ev.getPayload().which());
    ++n;
    return true;
  });
  const double rate = n / sw.seconds();
  if (!s.ok() || checksum == 0) throw std::runtime_error("scan failed");
  *count = n;
  return rate;
}

void benchScan(const std::string& dir, bool quick) {
  // Scans the log written by benchBulk (1 M events unless --quick). Each side runs in rounds,
  // alternating, each with its own open of the environment (a fresh map, as a new reader
  // process has), and the median of each is reported: one scan's speed depends on what ran
  // just before it (the first of a series ran 25 % slower here, whichever side it was).
  const std::string path = dir + "/bulk";
  const int rounds = quick ? 1 : 5;
  std::vector<double> ours, raw;
  uint64_t events = 0, rawEvents = 0;
  for (int i = 0; i < rounds; ++i) {
    ours.push_back(storeScan(path, &events));
    raw.push_back(rawScan(path, &rawEvents));
  }
  if (events != rawEvents) throw std::runtime_error("the scans saw different logs");
  report("store.scan", "events/s", median(ours), "lmdb.cursor.scan", median(raw),
         "\"events\": " + std::to_string(events) + ", \"rounds\": " + std::to_string(rounds));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: store_bench DATA_DIR [--quick]\n");
    return 2;
  }
  const std::string dir = argv[1];
  bool quick = false;
  std::string only;  // --only concurrent|bulk|scan (scan needs bulk's log)
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--only" && i + 1 < argc)
      only = argv[++i];
  }
  auto wanted = [&](const std::string& name) { return only.empty() || only == name; };
  if (only != "scan") std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  try {
    if (wanted("concurrent")) benchConcurrent(dir, quick);
    if (wanted("bulk")) benchBulk(dir, quick, quick ? 100'000 : 1'000'000);
    if (wanted("scan")) benchScan(dir, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "store_bench: %s\n", e.what());
    return 1;
  }
  if (only.empty()) std::filesystem::remove_all(dir);
  return 0;
}
