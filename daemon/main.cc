// imaged: the daemon. Reading main() shows the whole program: it builds each component and
// hands it its dependencies.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>

#include "daemon/asio.h"
#include "daemon/domain/validate.h"
#include "daemon/rpc/event_port.h"
#include "daemon/rpc/idle_poll.h"
#include "daemon/rpc/server.h"
#include "daemon/service.h"
#include "store/event_log.h"

#ifndef IMAGED_DEFAULT_CATALOG
#define IMAGED_DEFAULT_CATALOG "catalog/sample"
#endif

namespace {

std::string defaultDataDir() {
  if (::geteuid() == 0) return "/var/lib/imaged";
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
    return std::string(xdg) + "/imaged";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.local/share/imaged";
  return "imaged-data";
}

std::string defaultSocket() {
  if (const char* env = std::getenv("IMAGED_SOCKET"); env && *env) return env;
  if (::geteuid() == 0) return "/run/imaged/imaged.sock";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
    return std::string(xdg) + "/imaged.sock";
  return "/tmp/imaged-" + std::to_string(::geteuid()) + ".sock";
}

// The config file: which uids act as which tenants.
//   tenants:
//     "1001": acme        # a uid
//     deploy: globex      # or a user name
imaged::Result<std::map<uid_t, std::string>> readConfig(const std::string& path) {
  std::map<uid_t, std::string> out;
  if (path.empty()) return out;
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return imaged::Error{"E_INVALID_ARGUMENT", path + ": expected a map"};
    YAML::Node tenants = root["tenants"];
    if (!tenants) return out;
    if (!tenants.IsMap())
      return imaged::Error{"E_INVALID_ARGUMENT", path + ": tenants must be a map of uid: tenant"};
    for (const auto& kv : tenants) {
      const std::string who = kv.first.as<std::string>();
      const std::string tenant = kv.second.as<std::string>();
      if (auto s = imaged::domain::validateTenant(tenant); !s.ok()) {
        return imaged::Error{"E_INVALID_ARGUMENT", path + ": " + s.error().message};
      }
      uid_t uid;
      if (!who.empty() && who.find_first_not_of("0123456789") == std::string::npos) {
        uid = static_cast<uid_t>(std::stoul(who));
      } else if (const passwd* pw = ::getpwnam(who.c_str())) {
        uid = pw->pw_uid;
      } else {
        return imaged::Error{"E_INVALID_ARGUMENT", path + ": no user named " + who};
      }
      out[uid] = tenant;
    }
  } catch (const YAML::Exception& e) {
    return imaged::Error{"E_INVALID_ARGUMENT", path + ": " + e.what()};
  }
  return out;
}

std::shared_ptr<spdlog::logger> makeLogger(const std::string& format, const std::string& level) {
  auto logger =
      std::make_shared<spdlog::logger>("imaged", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == "json") {
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","message":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  return logger;
}

// Takes DATA_DIR/imaged.lock for the life of the process (the kernel lets it go however the
// process ends), so that a second daemon on the same data directory refuses to start: two
// would both run every build and collect each other's blobs. The file holds the owner's pid.
imaged::Status lockDataDir(const std::string& dataDir) {
  std::error_code ec;
  std::filesystem::create_directories(dataDir, ec);
  if (ec) return imaged::Error{"E_STORAGE", "cannot create " + dataDir + ": " + ec.message()};
  const std::string path = (std::filesystem::path(dataDir) / "imaged.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return imaged::Error{"E_STORAGE", "cannot open " + path + ": " + strerror(errno)};
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    std::string owner = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "";
    while (!owner.empty() && (owner.back() == '\n' || owner.back() == ' ')) owner.pop_back();
    return imaged::Error{"E_UNAVAILABLE", "another imaged" +
                                              (owner.empty() ? "" : " (pid " + owner + ")") +
                                              " is using the data directory " + dataDir};
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock is what counts; the pid is only for the message above.
  }
  return imaged::Ok{};  // fd stays open: the lock lasts as long as the process
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"imaged: builds private container images from a catalog of starter images"};
  std::string catalogDir = IMAGED_DEFAULT_CATALOG, dataDir = defaultDataDir(),
              socketPath = defaultSocket();
  std::string tenant = "local", configPath, logLevel = "info", logFormat = "text", socketGroup;
  size_t workers = 2;
  uint64_t snapshotEvery = 100'000;
  unsigned pollMicros = 100;
  app.add_option("--catalog", catalogDir,
                 "catalog directory (default: the shipped sample catalog)");
  app.add_option("--data-dir", dataDir,
                 "where the event log (log/), images (blobs/) and snapshots (snapshots/) live")
      ->capture_default_str();
  app.add_option("--socket", socketPath, "Unix socket to serve (also IMAGED_SOCKET)")
      ->capture_default_str();
  app.add_option("--tenant", tenant, "tenant of callers with the daemon's own uid")
      ->capture_default_str();
  app.add_option("--config", configPath,
                 "YAML file mapping other uids to tenants (tenants: {UID: TENANT})");
  app.add_option("--socket-group", socketGroup, "let this group use the socket too (mode 0660)");
  app.add_option("--build-workers", workers, "threads that resolve lines and write their images")
      ->capture_default_str();
  app.add_option("--snapshot-every", snapshotEvery,
                 "write a projection snapshot (DATA_DIR/snapshots) after this many events, and "
                 "at shutdown; 0: never")
      ->capture_default_str();
  app.add_option("--poll-us", pollMicros,
                 "poll for the next request up to this long before sleeping, while requests come "
                 "close together (adaptive; docs/daemon.md); 0: always sleep")
      ->check(CLI::Range(0u, 10'000u))
      ->capture_default_str();
  app.add_option("--log-level", logLevel, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--log-format", logFormat, "text|json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto logger = makeLogger(logFormat, logLevel);
  auto fail = [&](const std::string& message) {
    logger->error("{}", message);
    return 1;
  };
  if (auto s = imaged::domain::validateTenant(tenant); !s.ok()) return fail(s.error().message);
  auto tenants = readConfig(configPath);
  if (!tenants.ok()) return fail(tenants.error().message);
  std::optional<gid_t> socketGid;
  if (!socketGroup.empty()) {
    const struct group* g = ::getgrnam(socketGroup.c_str());
    if (!g) return fail("no group named " + socketGroup);
    socketGid = g->gr_gid;
  }

  if (auto s = lockDataDir(dataDir); !s.ok()) return fail(s.error().message);

  imaged::store::EventLog::Options storeOptions;
  storeOptions.path = (std::filesystem::path(dataDir) / "log").string();
  auto log = imaged::store::EventLog::open(storeOptions);
  if (!log.ok()) return fail("cannot open the event log: " + log.error().message);

  // One thread runs the loop (concurrency hint 1): a handler posted from that thread, as the
  // KJ port posts one for every turn of the RPC loop, is queued without waking the reactor
  // (otherwise each call cost an epoll_ctl on Asio's interrupter and an extra epoll_wait).
  // Other threads still post safely: the hint does not turn off Asio's locking.
  asio::io_context io(1);
  imaged::rpc::AsioEventPort port(io);
  kj::EventLoop loop(port);
  port.setLoop(&loop);
  kj::WaitScope waitScope(loop);

  imaged::Service::Options serviceOptions;
  serviceOptions.catalogDir = catalogDir;
  serviceOptions.blobDir = (std::filesystem::path(dataDir) / "blobs").string();
  serviceOptions.buildWorkers = workers;
  if (const char* delay = std::getenv("IMAGED_TEST_LINE_DELAY_MS"); delay && *delay) {
    serviceOptions.lineDelay = std::chrono::milliseconds(std::atoi(delay));
    logger->warn("IMAGED_TEST_LINE_DELAY_MS: every line waits {} ms (a test hook)", delay);
  }
  if (const char* grace = std::getenv("IMAGED_TEST_GC_GRACE_S"); grace && *grace) {
    serviceOptions.gcGrace = std::chrono::seconds(std::atoi(grace));
    logger->warn("IMAGED_TEST_GC_GRACE_S: blobs older than {} s may be collected (a test hook)",
                 grace);
  }
  serviceOptions.snapshotDir = (std::filesystem::path(dataDir) / "snapshots").string();
  serviceOptions.snapshotEvery = snapshotEvery;
  imaged::Service service(io, **log, logger, serviceOptions);
  if (auto s = service.start(); !s.ok()) return fail("cannot start: " + s.error().message);

  imaged::rpc::Access access{::geteuid(), tenant, *tenants};
  imaged::rpc::Listener listener(io, service, access, logger);
  if (auto s = listener.listen(socketPath, socketGid); !s.ok()) return fail(s.error().message);

  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> onSignal =
      [&](const boost::system::error_code& ec, int signal) {
        if (ec) return;
        if (signal == SIGHUP) {
          logger->info("SIGHUP: reloading the catalog");
          service.reloadCatalog([&](auto r) {
            if (!r.ok()) logger->error("reload failed: {}", r.error().message);
          });
          signals.async_wait(onSignal);
          return;
        }
        logger->info("{}: stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT");
        listener.stopAccepting();
        listener.closeAll();
        service.stop();
        io.stop();
      };
  signals.async_wait(onSignal);

  logger->info("imaged ready on {} (data {}, tenant {})", socketPath, dataDir, tenant);
  imaged::rpc::runPolling(io, std::chrono::microseconds(pollMicros));

  // Let closed connections' handlers run while the KJ loop still exists, then wind down. The
  // event log drains its queue (every acknowledged append is durable) as it closes.
  io.restart();
  io.poll();
  if (auto s = service.snapshotNow(); !s.ok()) {
    logger->warn("no snapshot at shutdown: {}", s.error().message);
  }
  logger->info("imaged stopped");
  return 0;
}
