// Benchmarks of the daemon as a whole: the real imaged as a child process.
// Usage: daemon_bench IMAGED_BIN CATALOG_DIR SCRATCH [--quick]
// (IMAGED_BENCH_SKIP_SHOW=1 leaves out rpc.show, IMAGED_BENCH_SKIP_CREATE=1 rpc.create,
// IMAGED_BENCH_SKIP_START=1 the start and memory figures, to profile the rest alone.)
//
// rpc.show.1 / rpc.show.64  getImage calls/s with 1 and 64 calls in flight, against a bare Cap'n
//                           Proto echo server over a Unix socket, same payload size and calls in
//                           flight, in the same run.
// rpc.create.64             durable creates/s from 64 concurrent clients, against the echo at
//                           64 in flight.
// daemon.start              time from exec to a connectable socket with a log of 1 M events
//                           (100,000 images; --quick: 10,000) and no snapshot, against the 1 s
//                           target.
// daemon.start.snapshot     the same with the snapshot the first start wrote.
// daemon.memory             the daemon's anonymous RSS per image beyond an empty daemon's, once
//                           started from the snapshot, against 1 KiB; also reports RSS and the
//                           log's bytes per image.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/ez-rpc.h>
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "bench/echo.capnp.h"
#include "bench_log.h"
#include "bench_util.h"
#include "schema/api.capnp.h"

using imaged::bench::median;
using imaged::bench::report;
using imaged::bench::Stopwatch;
namespace fs = std::filesystem;

namespace {

class EchoImpl final : public Echo::Server {
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setData(context.getParams().getData());
    return kj::READY_NOW;
  }
};

pid_t startEcho(const std::string& socket) {
  const pid_t pid = fork();
  if (pid == 0) {
    capnp::EzRpcServer server(kj::heap<EchoImpl>(), "unix:" + socket);
    kj::NEVER_DONE.wait(server.getWaitScope());
    _exit(0);
  }
  return pid;
}

bool connectable(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

void waitFor(const std::string& socket) {
  for (int i = 0; i < 60000 && !connectable(socket); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

pid_t startDaemon(const std::string& bin, const std::string& catalog, const std::string& data,
                  const std::string& socket) {
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    execl(bin.c_str(), bin.c_str(), "--catalog", catalog.c_str(), "--data-dir", data.c_str(),
          "--socket", socket.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

void stop(pid_t pid) {
  kill(pid, SIGTERM);
  int status;
  waitpid(pid, &status, 0);
}

long rssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Calls/s of `call` with `inFlight` outstanding for `total` calls on one connection.
template <typename MakeCall>
double rate(kj::WaitScope& ws, int inFlight, int total, MakeCall&& makeCall) {
  Stopwatch sw;
  int started = 0;
  std::function<kj::Promise<void>()> chain = [&]() -> kj::Promise<void> {
    if (started >= total) return kj::READY_NOW;
    ++started;
    return makeCall().then([&]() { return chain(); });
  };
  kj::Vector<kj::Promise<void>> lanes;
  for (int i = 0; i < inFlight; ++i) lanes.add(chain());
  kj::joinPromises(lanes.releaseAsArray()).wait(ws);
  return total / sw.seconds();
}

void benchRpc(const std::string& bin, const std::string& catalog, const std::string& scratch,
              bool quick) {
  const std::string data = scratch + "/rpc-data", socket = scratch + "/rpc.sock",
                    echoSocket = scratch + "/echo.sock";
  const pid_t daemon = startDaemon(bin, catalog, data, socket);
  const pid_t echo = startEcho(echoSocket);
  waitFor(socket);
  waitFor(echoSocket);
  const int total = quick ? 2000 : 20000;
  {
    capnp::EzRpcClient client("unix:" + socket);
    auto imaged = client.getMain<imaged::api::Imaged>();
    auto& ws = client.getWaitScope();
    auto create = imaged.createImageRequest();
    create.initSpec().setName("web");
    create.getSpec().setStarter("python");
    create.getSpec().initPackages(1).set(0, "py3-flask");
    create.send().wait(ws);
    // Let the build finish so that show returns the full image.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto probe = imaged.getImageRequest();
    probe.setName("web");
    auto response = probe.send().wait(ws);
    const size_t payload = response.totalSize().wordCount * 8;

    capnp::EzRpcClient echoClient("unix:" + echoSocket);
    auto echoCap = echoClient.getMain<Echo>();
    auto& ews = echoClient.getWaitScope();
    std::vector<kj::byte> bytes(payload, 'x');
    // Rounds alternating with the echo, and the median of each side: one round of either
    // moves by 20-30 % with whatever else the machine does at the moment.
    const int rounds = quick ? 1 : 3;
    for (int inFlight : {1, 64}) {
      if (getenv("IMAGED_BENCH_SKIP_SHOW")) break;  // to profile the creates alone
      std::vector<double> ours, base;
      for (int round = 0; round < rounds; ++round) {
        ours.push_back(rate(ws, inFlight, total, [&] {
          auto req = imaged.getImageRequest();
          req.setName("web");
          return req.send().ignoreResult();
        }));
        base.push_back(rate(ews, inFlight, total, [&] {
          auto req = echoCap.echoRequest();
          req.setData(kj::arrayPtr(bytes.data(), bytes.size()));
          return req.send().ignoreResult();
        }));
      }
      report("rpc.show." + std::to_string(inFlight), "calls/s", median(ours), "capnp.echo",
             median(base),
             "\"payload_bytes\": " + std::to_string(payload) +
                 ", \"rounds\": " + std::to_string(rounds) + ", \"target_ratio\": 0.7");
    }
  }
  // Durable creates from 64 clients, each on its own connection, all driven by one event loop
  // (as the echo's 64 calls in flight are): the clients' own cost stays out of the figure.
  if (!getenv("IMAGED_BENCH_SKIP_CREATE")) {
    const int clients = 64, perClient = quick ? 20 : 100;
    capnp::EzRpcClient driver("unix:" + socket);
    auto& ws = driver.getWaitScope();
    auto address = driver.getIoProvider().getNetwork().parseAddress("unix:" + socket).wait(ws);
    struct Connection {
      kj::Own<kj::AsyncIoStream> stream;
      kj::Own<capnp::TwoPartyClient> rpc;
      imaged::api::Imaged::Client imaged = nullptr;
    };
    std::vector<Connection> connections(clients);
    for (auto& c : connections) {
      c.stream = address->connect().wait(ws);
      c.rpc = kj::heap<capnp::TwoPartyClient>(*c.stream);
      c.imaged = c.rpc->bootstrap().castAs<imaged::api::Imaged>();
    }
    int failures = 0;
    std::function<kj::Promise<void>(int, int)> next = [&](int t, int i) -> kj::Promise<void> {
      if (i == perClient) return kj::READY_NOW;
      auto req = connections[t].imaged.createImageRequest();
      req.initSpec().setName("c" + std::to_string(t) + "-" + std::to_string(i));
      req.getSpec().setStarter("nginx");
      req.setIdempotencyKey("bench-" + std::to_string(t) + "-" + std::to_string(i));
      return req.send().then([&, t, i](auto r) {
        if (r.hasError()) ++failures;
        return next(t, i + 1);
      });
    };
    Stopwatch sw;
    kj::Vector<kj::Promise<void>> lanes;
    for (int t = 0; t < clients; ++t) lanes.add(next(t, 0));
    kj::joinPromises(lanes.releaseAsArray()).wait(ws);
    const double ours = clients * perClient / sw.seconds();
    capnp::EzRpcClient echoClient("unix:" + echoSocket);
    auto echoCap = echoClient.getMain<Echo>();
    std::vector<kj::byte> bytes(256, 'x');
    const double base = rate(echoClient.getWaitScope(), 64, quick ? 2000 : 20000, [&] {
      auto req = echoCap.echoRequest();
      req.setData(kj::arrayPtr(bytes.data(), bytes.size()));
      return req.send().ignoreResult();
    });
    report("rpc.create.64", "creates/s", ours, "capnp.echo", base,
           "\"failures\": " + std::to_string(failures) + ", \"target_ratio\": 0.5");
  }
  stop(daemon);
  kill(echo, SIGKILL);
  waitpid(echo, nullptr, 0);
}

// Waits until `dir` holds a file; false after a minute.
bool waitForFile(const std::string& dir) {
  for (int i = 0; i < 60000; ++i) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

long statusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return 0;
}

void benchStart(const std::string& bin, const std::string& catalog, const std::string& scratch,
                bool quick) {
  const int images = quick ? 10'000 : 100'000;
  const std::string data = scratch + "/start-data", socket = scratch + "/start.sock";
  imaged::bench::writeLog(data, catalog, images);
  const uint64_t logBytes = fs::file_size(data + "/log/data.mdb");
  const std::string events =
      "\"events\": " + std::to_string(images * 10 + 1) + ", \"images\": " + std::to_string(images);

  // A log without a snapshot: every event is replayed.
  Stopwatch sw;
  pid_t daemon = startDaemon(bin, catalog, data, socket);
  waitFor(socket);
  const double ms = sw.seconds() * 1000;
  report("daemon.start", "ms", ms, "target", 1000.0, events + ", \"from\": \"the log\"");
  // The daemon takes a snapshot in the background once it serves; the next start uses it.
  if (!waitForFile(data + "/snapshots")) throw std::runtime_error("no snapshot was written");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop(daemon);
  Stopwatch sw2;
  daemon = startDaemon(bin, catalog, data, socket);
  waitFor(socket);
  const double fromSnapshot = sw2.seconds() * 1000;
  report("daemon.start.snapshot", "ms", fromSnapshot, "target", 1000.0,
         events + ", \"from\": \"a snapshot\"");
  const long rss = rssKiB(daemon), anon = statusKiB(daemon, "RssAnon");
  stop(daemon);

  const std::string emptyData = scratch + "/empty-data", emptySocket = scratch + "/empty.sock";
  const pid_t empty = startDaemon(bin, catalog, emptyData, emptySocket);
  waitFor(emptySocket);
  const long emptyRss = rssKiB(empty), emptyAnon = statusKiB(empty, "RssAnon");
  stop(empty);
  // Started from a snapshot, the daemon maps the log but reads none of it: its memory beyond an
  // empty daemon's is the projection (RssAnon; RSS counts the mapped pages it touched too).
  const double perImage = (anon - emptyAnon) * 1024.0 / images;
  report("daemon.memory", "bytes/image", perImage, "target", 1024.0,
         "\"rss_kib\": " + std::to_string(rss) + ", \"rss_anon_kib\": " + std::to_string(anon) +
             ", \"empty_rss_kib\": " + std::to_string(emptyRss) +
             ", \"log_bytes_per_image\": " + std::to_string(logBytes / images));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: daemon_bench IMAGED_BIN CATALOG_DIR SCRATCH [--quick]\n");
    return 2;
  }
  const std::string bin = argv[1], catalog = argv[2], scratch = argv[3];
  const bool quick = argc > 4 && std::string(argv[4]) == "--quick";
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  try {
    benchRpc(bin, catalog, scratch, quick);
    if (!getenv("IMAGED_BENCH_SKIP_START")) benchStart(bin, catalog, scratch, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "daemon_bench: %s\n", e.what());
    return 1;
  }
  fs::remove_all(scratch);
  return 0;
}
