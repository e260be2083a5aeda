// imaged-audit: reads a data directory's event log read-only (also while the daemon runs) and
// never writes to it.
//
//   imaged-audit verify DATA_DIR                         the hash chain and every record, the
//                                                        streams index against them; then
//                                                        whether each snapshot matches the log
//   imaged-audit replay DATA_DIR [--until SEQ | --at TIME] [--json] [--no-snapshot]
//                                                        the state as it was then (from the
//                                                        newest snapshot that matches the log
//                                                        and lies before that point, then the
//                                                        events after it)
//   imaged-audit export DATA_DIR [--from SEQ] [--to SEQ] [--json]
//                                                        events as Cap'n Proto messages (what
//                                                        `capnp decode schema/events.capnp Event`
//                                                        reads) or JSON lines
//   imaged-audit history DATA_DIR --image TENANT/NAME    that image's events, readable
//
// Exit codes: 0 success (verify: intact); 1 damage found or nothing to show; 2 usage; 3 the log
// cannot be opened.
#include <unistd.h>

#include <capnp/compat/json.h>
#include <capnp/serialize.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "common/time.h"
#include "daemon/domain/projection.h"
#include "daemon/domain/snapshot.h"
#include "store/event_log.h"

namespace {

using imaged::domain::ImageState;
using imaged::domain::Projection;
using nlohmann::ordered_json;

std::unique_ptr<imaged::store::EventLog> openLog(const std::string& dataDir) {
  imaged::store::EventLog::Options o;
  o.path = (std::filesystem::path(dataDir) / "log").string();
  o.readOnly = true;
  auto log = imaged::store::EventLog::open(o);
  if (!log.ok()) {
    std::fprintf(stderr, "error[%s]: %s\n", log.error().code.c_str(), log.error().message.c_str());
    std::exit(3);
  }
  return std::move(log).value();
}

ordered_json imageJson(const ImageState& i) {
  ordered_json env = ordered_json::object(), lines = ordered_json::array(),
               tags = ordered_json::object();
  for (const auto& e : i.env) env[e.key] = e.value;
  if (const auto* b = i.latestBuild()) {
    for (const auto& l : b->lines) {
      ordered_json line = {
          {"line", l.line}, {"version", l.version}, {"status", imaged::domain::toString(l.status)}};
      if (l.status == imaged::domain::LineStatus::kBuilt) {
        line["packages"] = *l.packages;
        if (!l.digest().empty()) line["digest"] = l.digest();
      } else if (l.status == imaged::domain::LineStatus::kSkipped) {
        line["code"] = l.code();
        line["reason"] = std::string(l.reason());
      }
      lines.push_back(line);
    }
  }
  for (const auto& [tag, version] : i.tags()) tags[tag] = version;
  const auto* latest = i.latestBuild();
  ordered_json error = nullptr;
  if (latest && latest->status == imaged::domain::BuildStatus::kFailed) {
    error = {{"code", latest->errorCode}, {"message", latest->errorMessage}};
  }
  return {{"name", i.name},
          {"fullName", i.tenant.str() + "/" + i.name},
          {"description", i.description},
          {"starter", i.starter},
          {"status", i.status()},
          {"createdAt",
           i.createdAt ? ordered_json(imaged::formatTime(i.createdAt)) : ordered_json(nullptr)},
          {"packages", i.packages.get()},
          {"env", env},
          {"version", i.version},
          {"lines", lines},
          {"tags", tags},
          {"error", error}};
}

int verify(const std::string& dataDir) {
  auto log = openLog(dataDir);
  auto report = log->verify();
  if (!report.ok()) {
    std::fprintf(stderr, "error[%s]: %s\n", report.error().code.c_str(),
                 report.error().message.c_str());
    return 3;
  }
  if (!report->intact) {
    std::printf("damaged at sequence %llu: %s (%llu events before it are intact)\n",
                static_cast<unsigned long long>(report->firstBad), report->problem.c_str(),
                static_cast<unsigned long long>(report->events));
    return 1;
  }
  std::printf("intact: %llu events, head %s\n", static_cast<unsigned long long>(report->events),
              imaged::store::toHex(report->head).c_str());
  // The streams index is derived from the records, but readers of a stream rely on it.
  if (!report->indexIntact) {
    std::printf("streams index damaged: %s\n", report->indexProblem.c_str());
    return 1;
  }
  std::printf("streams index: intact, %llu events indexed, %llu after it\n",
              static_cast<unsigned long long>(report->indexed),
              static_cast<unsigned long long>(report->events - report->indexed));
  // Snapshots are a cache, not the log: one that does not match is reported, not damage.
  if (auto txn = log->read(); txn.ok()) {
    const auto dir = (std::filesystem::path(dataDir) / "snapshots").string();
    for (const auto& c : imaged::domain::checkSnapshots(dir, **txn)) {
      std::printf(
          "snapshot at %llu: %s\n", static_cast<unsigned long long>(c.sequence),
          c.status.ok() ? "matches the log" : ("not used: " + c.status.error().message).c_str());
    }
  }
  return 0;
}

int replay(const std::string& dataDir, uint64_t until, const std::string& at, bool json,
           bool useSnapshot) {
  std::optional<int64_t> atTime;
  if (!at.empty()) {
    atTime = imaged::parseTimeAsOf(at);
    if (!atTime) {
      std::fprintf(stderr, "error[E_INVALID_ARGUMENT]: '%s' is not an RFC 3339 time\n", at.c_str());
      return 2;
    }
  }
  auto log = openLog(dataDir);
  auto txn = log->read();
  if (!txn.ok()) return 3;
  // The point to replay to: a sequence, a time, or the end.
  const uint64_t lastSequence = until ? until : UINT64_MAX;
  const int64_t lastTime = atTime ? *atTime : INT64_MAX;
  Projection state;
  if (useSnapshot) {
    auto loaded = imaged::domain::loadSnapshot(
        (std::filesystem::path(dataDir) / "snapshots").string(), **txn, lastSequence, lastTime,
        [](const std::string& why) { std::fprintf(stderr, "warning: %s\n", why.c_str()); });
    if (loaded) state = std::move(loaded->projection);
  }
  auto s = imaged::domain::applyLog(**txn, state, lastSequence, lastTime);
  if (!s.ok()) {
    std::fprintf(stderr, "error[%s]: %s\n", s.error().code.c_str(), s.error().message.c_str());
    return 1;
  }
  if (json) {
    ordered_json out = ordered_json::array();
    for (const ImageState* i : state.liveImages()) out.push_back(imageJson(*i));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("state after event %llu\n", static_cast<unsigned long long>(state.lastSequence()));
  for (const std::string& tenant : state.tenants()) {
    std::printf("tenant %s\n", tenant.c_str());
    for (const ImageState* i : state.gallery(tenant)) {
      std::string tags;
      for (const auto& [tag, version] : i->tags())
        tags += (tags.empty() ? "" : ", ") + tag + " -> " + version;
      std::printf("  %s  %s  v%llu  tags: %s\n", i->name.c_str(), i->status().c_str(),
                  static_cast<unsigned long long>(i->version), tags.empty() ? "-" : tags.c_str());
      if (const auto* b = i->latestBuild()) {
        for (const auto& l : b->lines) {
          using imaged::domain::cstr;
          std::printf("    line %s: %s %s%s%s\n", cstr(l.line), imaged::domain::toString(l.status),
                      cstr(l.version), l.code().empty() ? "" : ": ", cstr(l.code()));
        }
      }
    }
  }
  return 0;
}

int exportEvents(const std::string& dataDir, uint64_t from, uint64_t to, bool json) {
  auto log = openLog(dataDir);
  auto txn = log->read();
  if (!txn.ok()) return 3;
  capnp::JsonCodec codec;
  auto s = (*txn)->forEach(from, [&](const imaged::store::EventRef& e) {
    if (to && e.sequence() > to) return false;
    if (json) {
      capnp::FlatArrayMessageReader reader(e.words());
      std::cout << codec.encode(reader.getRoot<imaged::schema::Event>()).cStr() << "\n";
    } else {
      // Each stored record is a whole flat message: exactly what `capnp decode` reads.
      std::cout.write(reinterpret_cast<const char*>(e.words().begin()),
                      static_cast<std::streamsize>(e.words().size() * sizeof(capnp::word)));
    }
    return true;
  });
  std::cout.flush();
  return s.ok() ? 0 : 1;
}

int history(const std::string& dataDir, const std::string& image) {
  const size_t slash = image.find('/');
  if (slash == std::string::npos) {
    std::fprintf(stderr, "error[E_INVALID_ARGUMENT]: --image takes TENANT/NAME\n");
    return 2;
  }
  auto log = openLog(dataDir);
  auto txn = log->read();
  if (!txn.ok()) return 3;
  // Every image that ever had this name, oldest first: image/<tenant>/<name>/1, /2, ...
  int shown = 0;
  for (int n = 1;; ++n) {
    const std::string stream = "image/" + image + "/" + std::to_string(n);
    if ((*txn)->streamVersion(stream) == 0) break;
    std::printf("%s\n", stream.c_str());
    (void)(*txn)->forEachInStream(stream, 1, [&](const imaged::store::EventRef& e) {
      capnp::FlatArrayMessageReader reader(e.words());
      auto ev = reader.getRoot<imaged::schema::Event>();
      capnp::JsonCodec codec;
      std::printf("  %6llu  v%-3llu  %s  %s\n", static_cast<unsigned long long>(ev.getSequence()),
                  static_cast<unsigned long long>(ev.getStreamVersion()),
                  imaged::formatTime(ev.getTime()).c_str(), codec.encode(ev.getPayload()).cStr());
      ++shown;
      return true;
    });
  }
  if (shown == 0) {
    std::fprintf(stderr, "error[E_NOT_FOUND]: no image %s in the log\n", image.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"imaged-audit: verify, replay and export imaged's event log (read-only)"};
  app.require_subcommand(1);
  std::string dataDir, at, image;
  uint64_t until = 0, from = 1, to = 0;
  bool json = false, noSnapshot = false;
  auto* verifyCmd =
      app.add_subcommand("verify", "check the hash chain, every record and the streams index");
  verifyCmd->add_option("DATA_DIR", dataDir)->required();
  auto* replayCmd = app.add_subcommand("replay", "the state as it was at a point of the log");
  replayCmd->add_option("DATA_DIR", dataDir)->required();
  replayCmd->add_option("--until", until, "replay up to this sequence number");
  replayCmd->add_option("--at", at, "replay up to this RFC 3339 time");
  replayCmd->add_flag("--json", json);
  replayCmd->add_flag("--no-snapshot", noSnapshot, "replay every event from the first");
  auto* exportCmd = app.add_subcommand("export", "events as Cap'n Proto messages, or --json lines");
  exportCmd->add_option("DATA_DIR", dataDir)->required();
  exportCmd->add_option("--from", from);
  exportCmd->add_option("--to", to);
  exportCmd->add_flag("--json", json);
  auto* historyCmd = app.add_subcommand("history", "an image's events");
  historyCmd->add_option("DATA_DIR", dataDir)->required();
  historyCmd->add_option("--image", image, "TENANT/NAME")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*verifyCmd) return verify(dataDir);
  if (*replayCmd) return replay(dataDir, until, at, json, !noSnapshot);
  if (*exportCmd) return exportEvents(dataDir, from, to, json);
  if (*historyCmd) return history(dataDir, image);
  return 2;
}
