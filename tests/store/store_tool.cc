// A helper process for the store's multi-process tests (crash, disk full, stale readers, a
// read-only reader beside a writer). Each mode prints one line per fact to stdout, flushed, so
// the parent test can read what was acknowledged before it kills this process.
//
//   store_tool append-loop DIR THREADS    append forever; print "ack SEQ STREAM TAG" per append
//   store_tool fill DIR MAX_FILE_BYTES    like append-loop with RLIMIT_FSIZE; print "error CODE",
//                                         then lift the limit, append again: "after ack SEQ"
//   store_tool fill-burst DIR             append one event, limit the file to its size, then
//                                         queue 300 requests at once (a few large): "ack FIRST
//                                         LAST" or "error CODE" for each; then as fill
//   store_tool hold-reader DIR            open read-only, begin a read, print "ready", sleep
//   store_tool watch DIR UNTIL            read snapshots until UNTIL events are seen; exit 0 if
//                                         every snapshot was a gapless, verified prefix
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/event_log.h"
#include "test_util.h"

using namespace imaged::store;

namespace {

std::mutex outMutex;

void say(const std::string& line) {
  std::lock_guard lk(outMutex);
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

std::unique_ptr<EventLog> open(const std::string& dir, bool readOnly) {
  EventLog::Options o;
  o.path = dir;
  o.readOnly = readOnly;
  o.initialMapSize = 1 << 20;  // small, so that growth happens under the crash test too
  o.streamIndexEvery = 37;     // small, so that the kill also lands around index writes
  auto log = EventLog::open(std::move(o));
  if (!log.ok()) {
    say("error " + log.error().code + " " + log.error().message);
    std::exit(3);
  }
  return std::move(log).value();
}

int appendLoop(const std::string& dir, int threads, bool retryAfterError = false) {
  auto log = open(dir, false);
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string stream = "stream-" + std::to_string(t);
      for (uint64_t i = 0; !failed; ++i) {
        const std::string tag = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto r = log->append(testing::request(stream, 1 + i % 3, tag));
        if (!r.ok()) {
          say("error " + r.error().code + " " + r.error().message);
          failed = true;
          return;
        }
        say("ack " + std::to_string(r->firstSequence) + " " + std::to_string(r->lastSequence) +
            " " + stream + " " + tag);
      }
    });
  }
  for (auto& w : workers) w.join();
  if (retryAfterError) {
    // Room again (the soft file size limit lifted): the same open log must take appends.
    rlimit lim{RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &lim);
    auto r = log->append(testing::request("after", 1, "after"));
    say(r.ok() ? "after ack " + std::to_string(r->lastSequence) : "after error " + r.error().code);
  }
  return 0;
}

// Requests queued while the disk fills: batches are staged on top of commits that fail.
int fillBurst(const std::string& dir) {
  auto log = open(dir, false);
  if (!log->append(testing::request("first", 1, "first")).ok()) return 4;
  signal(SIGXFSZ, SIG_IGN);
  struct stat st {};
  if (stat((dir + "/data.mdb").c_str(), &st) != 0) return 4;
  rlimit lim{static_cast<rlim_t>(st.st_size), RLIM_INFINITY};
  setrlimit(RLIMIT_FSIZE, &lim);
  constexpr int kRequests = 300;
  std::atomic<int> left{kRequests};
  std::promise<void> all;
  for (int i = 0; i < kRequests; ++i) {
    const size_t n = i % 50 == 7 ? 600 : 1 + i % 3;
    auto r = testing::request("stream-" + std::to_string(i % 7), n, "b" + std::to_string(i));
    log->appendAsync(std::move(r), [&](imaged::Result<AppendResult> r) {
      say(r.ok() ? "ack " + std::to_string(r->firstSequence) + " " + std::to_string(r->lastSequence)
                 : "error " + r.error().code + " " + r.error().message);
      if (--left == 0) all.set_value();
    });
    if (i % 20 == 19) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (all.get_future().wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    say("lost: a request was never answered");
    std::_Exit(5);
  }
  rlimit none{RLIM_INFINITY, RLIM_INFINITY};
  setrlimit(RLIMIT_FSIZE, &none);
  auto r = log->append(testing::request("after", 1, "after"));
  say(r.ok() ? "after ack " + std::to_string(r->lastSequence) : "after error " + r.error().code);
  return 0;
}

int holdReader(const std::string& dir) {
  auto log = open(dir, true);
  auto txn = log->read();
  if (!txn.ok()) return 3;
  say("ready " + std::to_string((*txn)->lastSequence()));
  for (;;) pause();
}

int watch(const std::string& dir, uint64_t until) {
  std::unique_ptr<EventLog> log;
  for (int i = 0; i < 500 && !log; ++i) {  // the writer may not have created the store yet
    EventLog::Options o;
    o.path = dir;
    o.readOnly = true;
    auto r = EventLog::open(std::move(o));
    if (r.ok())
      log = std::move(r).value();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!log) return say("error cannot open"), 3;
  uint64_t lastSeen = 0, snapshots = 0;
  while (lastSeen < until) {
    auto txn = log->read();
    if (!txn.ok()) return say("error " + txn.error().message), 4;
    const uint64_t last = (*txn)->lastSequence();
    if (last < lastSeen) return say("error went back from " + std::to_string(lastSeen)), 5;
    uint64_t expected = 1;
    auto s = (*txn)->forEach(1, [&](const EventRef& e) {
      if (e.sequence() != expected || testing::decode(e.words()).sequence != expected) return false;
      ++expected;
      return true;
    });
    if (!s.ok() || expected != last + 1) {
      return say("error snapshot at " + std::to_string(last) + " is not a gapless prefix"), 6;
    }
    lastSeen = last;
    ++snapshots;
    txn = imaged::Error{};  // end the snapshot before verifying in another
    auto v = log->verify();
    if (!v.ok() || !v->intact) return say("error verify failed"), 7;
  }
  say("ok " + std::to_string(lastSeen) + " " + std::to_string(snapshots));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1], dir = argv[2];
  if (mode == "append-loop") return appendLoop(dir, argc > 3 ? std::atoi(argv[3]) : 1);
  if (mode == "fill") {
    signal(SIGXFSZ, SIG_IGN);  // a write past the limit then fails with EFBIG, like a full disk
    rlimit lim{std::strtoull(argv[3], nullptr, 10), RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &lim);
    return appendLoop(dir, 2, /*retryAfterError=*/true);
  }
  if (mode == "fill-burst") return fillBurst(dir);
  if (mode == "hold-reader") return holdReader(dir);
  if (mode == "watch") return watch(dir, std::strtoull(argv[3], nullptr, 10));
  return 2;
}
