// Crash test: a child process appends in a loop from several threads and reports every
// acknowledged append through a pipe; we SIGKILL it at a random moment, reopen the store, and
// check that every acknowledged event is there, with its content, and that the chain verifies.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "store/event_log.h"
#include "test_util.h"

namespace imaged::store {
namespace {

using testing::decode;
using testing::TempDir;

struct Ack {
  uint64_t first, last;
  std::string stream, tag;
};

int rounds() {
  const char* env = std::getenv("IMAGED_CRASH_ROUNDS");
  return env ? std::atoi(env) : 25;
}

TEST(Crash, EveryAcknowledgedEventSurvivesSigkill) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delayMs(5, 250), acksBeforeKill(0, 400);
  int killedMidWrite = 0;
  for (int round = 0; round < rounds(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDir dir;
    std::vector<Ack> acks;
    {
      testing::Child child({STORE_TOOL, "append-loop", dir.path(), "4"});
      // Kill after a random number of acknowledgements or a random delay, whichever is first.
      const int target = acksBeforeKill(rng);
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(delayMs(rng));
      std::thread killer([&] {
        std::this_thread::sleep_until(deadline);
        child.kill(SIGKILL);
      });
      std::string line;
      while (child.readLine(&line)) {
        std::istringstream in(line);
        std::string kind;
        in >> kind;
        ASSERT_EQ(kind, "ack") << line;
        Ack a;
        in >> a.first >> a.last >> a.stream >> a.tag;
        acks.push_back(a);
        if (static_cast<int>(acks.size()) == target) child.kill(SIGKILL);
      }
      killer.join();
      const int status = child.wait();
      ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    }

    EventLog::Options o;
    o.path = dir.path();
    auto opened = EventLog::open(o);
    if (!opened.ok() && acks.empty() && opened.error().code == "E_STORAGE") continue;
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    auto log = std::move(opened).value();
    auto v = log->verify();
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE(v->intact) << v->problem;
    auto txn = log->read();
    uint64_t maxAcked = 0;
    for (const Ack& a : acks) {
      for (uint64_t s = a.first; s <= a.last; ++s) {
        auto e = (*txn)->get(s);
        ASSERT_TRUE(e.ok()) << "acknowledged event " << s << " lost";
        auto d = decode(e->words);
        EXPECT_EQ(d.streamId, a.stream);
        EXPECT_EQ(d.reason, a.tag + "-" + std::to_string(s - a.first));
      }
      maxAcked = std::max(maxAcked, a.last);
    }
    EXPECT_GE((*txn)->lastSequence(), maxAcked);
    // Every stream reads back whole (index and the events after it): versions 1.. without
    // gaps, and each acknowledged event at its sequence.
    std::map<std::string, std::set<uint64_t>> byStream;
    for (const Ack& a : acks) {
      for (uint64_t s = a.first; s <= a.last; ++s) byStream[a.stream].insert(s);
    }
    for (const auto& [stream, acked] : byStream) {
      uint64_t version = 0;
      std::set<uint64_t> seen;
      auto s = (*txn)->forEachInStream(stream, 1, [&](const EventRef& e) {
        EXPECT_EQ(decode(e.words()).streamVersion, ++version) << stream;
        seen.insert(e.sequence());
        return true;
      });
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_EQ((*txn)->streamVersion(stream), version) << stream;
      for (uint64_t seq : acked) EXPECT_TRUE(seen.count(seq)) << stream << " lacks " << seq;
    }
    if ((*txn)->lastSequence() > maxAcked) ++killedMidWrite;
  }
  // Not asserted (timing decides it), but worth seeing: rounds where events were durable but
  // not yet acknowledged when the kill came.
  std::printf("rounds with durable unacknowledged events: %d\n", killedMidWrite);
}

}  // namespace
}  // namespace imaged::store
