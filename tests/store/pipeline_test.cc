// Staging on top of the batch in flight: requests queued while a commit runs are checked
// against what that commit will write (its streams' versions, its idempotency keys), against
// their own batch and against the log, whichever of them holds the answer.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "store/event_log.h"
#include "test_util.h"

namespace imaged::store {
namespace {

using testing::request;
using testing::TempDir;

std::unique_ptr<EventLog> open(const std::string& path, uint64_t indexEvery) {
  EventLog::Options o;
  o.path = path;
  o.initialMapSize = 64 * 1024;  // grows during the test, under staged batches
  o.streamIndexEvery = indexEvery;
  auto log = EventLog::open(std::move(o));
  EXPECT_TRUE(log.ok()) << log.error().message;
  return log.ok() ? std::move(log).value() : nullptr;
}

struct Outcome {
  std::mutex mutex;
  std::map<int, Result<AppendResult>> results;
  std::promise<void> all;
  int left = 0;
};

TEST(Pipeline, QueuedRequestsSeeTheBatchInFlightTheirBatchAndTheLog) {
  for (uint64_t indexEvery : {uint64_t{5}, uint64_t{4096}}) {
    TempDir dir;
    auto log = open(dir.path(), indexEvery);
    ASSERT_TRUE(log);
    constexpr int kStreams = 12, kRounds = 30;
    // Per stream, request j expects version j and has key "<stream>/<j>"; after each round,
    // the previous round's requests come again (duplicates) and once more with a stale
    // expected version and no key (conflicts). Rounds are queued 300 us apart, so that they
    // land in the batch being committed, the one staged on top of it, or the log.
    struct Sent {
      std::string stream;
      int round;
      enum { kFirst, kAgain, kStale } kind;
    };
    std::vector<Sent> sent;
    Outcome out;
    out.left = kStreams * (3 * kRounds - 2);
    auto send = [&](AppendRequest r, Sent s) {
      const int id = static_cast<int>(sent.size());
      sent.push_back(s);
      log->appendAsync(std::move(r), [&out, id](Result<AppendResult> result) {
        std::lock_guard lk(out.mutex);
        out.results.emplace(id, std::move(result));
        if (--out.left == 0) out.all.set_value();
      });
    };
    for (int j = 0; j < kRounds; ++j) {
      for (int k = 0; k < kStreams; ++k) {
        const std::string stream = "s" + std::to_string(k);
        // Request j writes 1 + k % 3 events: the stream's version before it is the sum.
        const uint64_t before = static_cast<uint64_t>(j) * (1 + k % 3);
        auto r =
            request(stream, 1 + k % 3, "r" + std::to_string(j), ExpectedVersion::exactly(before));
        r.idempotencyKey = stream + "/" + std::to_string(j);
        send(std::move(r), Sent{stream, j, Sent::kFirst});
        if (j > 0) {
          const uint64_t previous = before - (1 + k % 3);
          auto again = request(stream, 1 + k % 3, "r" + std::to_string(j - 1),
                               ExpectedVersion::exactly(previous));
          again.idempotencyKey = stream + "/" + std::to_string(j - 1);
          send(std::move(again), Sent{stream, j - 1, Sent::kAgain});
          send(request(stream, 1, "stale", ExpectedVersion::exactly(previous)),
               Sent{stream, j - 1, Sent::kStale});
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
    out.all.get_future().wait();

    std::map<std::pair<std::string, int>, AppendResult> firsts;
    for (size_t id = 0; id < sent.size(); ++id) {
      const auto& s = sent[id];
      const auto& r = out.results.at(static_cast<int>(id));
      if (s.kind == Sent::kFirst) {
        ASSERT_TRUE(r.ok()) << s.stream << " round " << s.round << ": " << r.error().message;
        EXPECT_FALSE(r->duplicate);
        firsts[{s.stream, s.round}] = *r;
      }
    }
    for (size_t id = 0; id < sent.size(); ++id) {
      const auto& s = sent[id];
      const auto& r = out.results.at(static_cast<int>(id));
      if (s.kind == Sent::kAgain) {
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_TRUE(r->duplicate);
        AppendResult want = firsts.at({s.stream, s.round});
        want.duplicate = true;
        EXPECT_EQ(*r, want) << s.stream << " round " << s.round;
      } else if (s.kind == Sent::kStale) {
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, "E_VERSION_CONFLICT");
      }
    }

    // Nothing but the first requests was written, each stream gapless, the chain whole.
    uint64_t events = 0;
    for (int k = 0; k < kStreams; ++k) events += kRounds * (1 + k % 3);
    EXPECT_EQ(log->lastSequence(), events);
    EXPECT_GT(log->stats().commits, 2u);
    auto v = log->verify();
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->intact) << v->problem;
    EXPECT_TRUE(v->indexIntact) << v->indexProblem;
    log.reset();
    log = open(dir.path(), indexEvery);
    ASSERT_TRUE(log);
    auto txn = log->read();
    ASSERT_TRUE(txn.ok());
    for (int k = 0; k < kStreams; ++k) {
      const std::string stream = "s" + std::to_string(k);
      uint64_t version = 0;
      auto s = (*txn)->forEachInStream(stream, 1, [&](const EventRef& e) {
        EXPECT_EQ(testing::decode(e.words()).streamVersion, ++version);
        return true;
      });
      ASSERT_TRUE(s.ok());
      EXPECT_EQ(version, static_cast<uint64_t>(kRounds) * (1 + k % 3)) << stream;
    }
  }
}

TEST(Pipeline, ALargeRequestBetweenSmallOnesKeepsTheChainAcrossBatches) {
  // The writer chains a large request's events, and the small ones after it that the stager
  // could not chain; the batches staged meanwhile continue that chain.
  TempDir dir;
  auto log = open(dir.path(), 4096);
  ASSERT_TRUE(log);
  Outcome out;
  const size_t sizes[] = {1, 2, 600, 1, 3, 1, 900, 2, 1, 1, 700, 1};
  constexpr int kRepeats = 4;
  out.left = static_cast<int>(std::size(sizes)) * kRepeats;
  std::vector<size_t> sizeOf;
  for (int rep = 0; rep < kRepeats; ++rep) {
    for (size_t n : sizes) {
      const int id = static_cast<int>(sizeOf.size());
      sizeOf.push_back(n);
      log->appendAsync(request("s" + std::to_string(id % 3), n, "q" + std::to_string(id)),
                       [&out, id](Result<AppendResult> r) {
                         std::lock_guard lk(out.mutex);
                         out.results.emplace(id, std::move(r));
                         if (--out.left == 0) out.all.set_value();
                       });
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  out.all.get_future().wait();
  uint64_t total = 0;
  for (size_t id = 0; id < sizeOf.size(); ++id) {
    const auto& r = out.results.at(static_cast<int>(id));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->lastSequence - r->firstSequence + 1, sizeOf[id]);
    total += sizeOf[id];
  }
  EXPECT_EQ(log->lastSequence(), total);
  auto v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
  EXPECT_EQ(v->events, total);
  // The head the next open checks against the last record.
  log.reset();
  log = open(dir.path(), 4096);
  ASSERT_TRUE(log);
  auto more = log->append(request("s0", 1, "after"));
  ASSERT_TRUE(more.ok()) << more.error().message;
  EXPECT_EQ(more->firstSequence, total + 1);
  v = log->verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->intact) << v->problem;
}

}  // namespace
}  // namespace imaged::store
