// imagectl: the command line of imaged (CLI.md). Uses only the client library.
//
// Exit codes: 0 success; 1 the daemon refused the request (or `wait` gave up: E_WAIT_TIMEOUT);
// 2 usage error; 3 cannot reach the daemon; 4 `--wait`/`wait` ended with the build failed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>

#include "client/client.h"

using imaged::Error;
using imaged::Result;
using nlohmann::ordered_json;
namespace ic = imaged::client;

namespace {

constexpr int kOk = 0, kRefused = 1, kUsage = 2, kUnreachable = 3, kBuildFailed = 4;

struct Globals {
  std::string socket;
  bool json = false;
  double timeout = 30;
};

int report(const Globals& g, const Error& e) {
  std::fprintf(stderr, "error[%s]: %s\n", e.code.c_str(), e.message.c_str());
  if (g.json) {
    ordered_json j = {{"error", {{"code", e.code}, {"message", e.message}}}};
    std::cout << j.dump(2) << "\n";
  }
  return e.code == "E_UNAVAILABLE" || e.code == "E_TIMEOUT" ? kUnreachable : kRefused;
}

ordered_json lineJson(const ic::Line& l) {
  ordered_json j = {{"line", l.line}, {"version", l.version}, {"status", l.status}};
  if (l.status == "built") {
    j["packages"] = l.packages;
    if (!l.digest.empty()) j["digest"] = l.digest;
  } else if (l.status == "skipped") {
    j["code"] = l.code;
    j["reason"] = l.reason;
  }
  return j;
}

ordered_json errorJson(const std::optional<Error>& e) {
  if (!e) return nullptr;
  return {{"code", e->code}, {"message", e->message}};
}

ordered_json tagsJson(const ic::Image& i) {
  ordered_json tags = ordered_json::object();
  for (const auto& t : i.tags) tags[t.tag] = t.version;
  return tags;
}

ordered_json imageJson(const ic::Image& i, bool withBuilds) {
  ordered_json env = ordered_json::object();
  for (const auto& e : i.env) env[e.key] = e.value;
  ordered_json lines = ordered_json::array();
  for (const auto& l : i.lines) lines.push_back(lineJson(l));
  ordered_json j = {
      {"name", i.name},
      {"fullName", i.fullName},
      {"description", i.description},
      {"starter", i.starter},
      {"status", i.status},
      {"createdAt", i.createdAt.empty() ? ordered_json(nullptr) : ordered_json(i.createdAt)},
      {"packages", i.packages},
      {"env", env},
      {"version", i.version},
      {"lines", lines},
      {"tags", tagsJson(i)},
      {"error", errorJson(i.error)}};
  if (withBuilds) j["builds"] = ordered_json::array();
  for (const auto& b : i.builds) {
    ordered_json bl = ordered_json::array();
    for (const auto& l : b.lines) bl.push_back(lineJson(l));
    j["builds"].push_back(
        {{"id", b.id},
         {"number", b.number},
         {"reason", b.reason},
         {"status", b.status},
         {"requestedAt", b.requestedAt},
         {"endedAt", b.endedAt.empty() ? ordered_json(nullptr) : ordered_json(b.endedAt)},
         {"catalogDigest", b.catalogDigest},
         {"lines", bl},
         {"error", errorJson(b.error)}});
  }
  return j;
}

// A table with left-aligned columns.
void table(const std::vector<std::string>& header,
           const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], r[c].size());
  }
  auto print = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      line += r[c];
      if (c + 1 < r.size()) line += std::string(width[c] - r[c].size() + 2, ' ');
    }
    std::cout << line << "\n";
  };
  print(header);
  for (const auto& r : rows) print(r);
}

std::string lineSummary(const ic::Line& l) {
  if (l.status == "built")
    return "built " + l.version + " (" + std::to_string(l.packages.size()) + " packages)";
  if (l.status == "skipped") return "skipped " + l.version + ": " + l.code + ": " + l.reason;
  return l.status + " " + l.version;
}

void printImage(const ic::Image& i) {
  std::cout << i.fullName << "  " << i.status;
  if (!i.createdAt.empty()) std::cout << "  created " << i.createdAt;
  std::cout << "\n  starter:     " << i.starter << "\n";
  if (!i.description.empty()) std::cout << "  description: " << i.description << "\n";
  std::string packages;
  for (const auto& p : i.packages) packages += (packages.empty() ? "" : ", ") + p;
  std::cout << "  packages:    " << (packages.empty() ? "-" : packages) << "\n";
  for (const auto& e : i.env) std::cout << "  env:         " << e.key << "=" << e.value << "\n";
  std::cout << "  version:     " << i.version << "\n  lines:\n";
  for (const auto& l : i.lines) std::cout << "    " << l.line << "  " << lineSummary(l) << "\n";
  if (!i.tags.empty()) {
    std::string tags;
    for (const auto& t : i.tags) tags += (tags.empty() ? "" : ", ") + t.tag + " -> " + t.version;
    std::cout << "  tags:        " << tags << "\n";
  }
  if (i.error) std::cout << "  error[" << i.error->code << "]: " << i.error->message << "\n";
}

Result<std::vector<ic::EnvVar>> parseEnv(const std::vector<std::string>& pairs) {
  std::vector<ic::EnvVar> out;
  for (const auto& p : pairs) {
    const size_t eq = p.find('=');
    // "KEY" alone is a key with no value: sent as such for the daemon to refuse
    // (E_ENV_EMPTY_VALUE).
    out.push_back(eq == std::string::npos ? ic::EnvVar{p, ""}
                                          : ic::EnvVar{p.substr(0, eq), p.substr(eq + 1)});
  }
  return out;
}

Result<std::unique_ptr<ic::Client>> connect(const Globals& g) {
  return ic::Client::connect(g.socket,
                             std::chrono::milliseconds(static_cast<int64_t>(g.timeout * 1000)));
}

// Follows the image's build live and prints each line; returns the exit code.
int waitForBuild(const Globals& g, ic::Client& c, const std::string& name, double timeoutSeconds) {
  auto image = c.watch(
      name,
      [&](const ic::Line& l) {
        if (!g.json) std::cout << "  line " << l.line << ": " << lineSummary(l) << std::endl;
      },
      std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000)));
  if (!image.ok()) {
    // The daemon answered and the build goes on: not "cannot reach the daemon" (exit 3).
    if (image.error().code == "E_TIMEOUT") {
      std::ostringstream seconds;
      seconds << timeoutSeconds;
      return report(g, Error{"E_WAIT_TIMEOUT", name + ": the build is still in progress after " +
                                                   seconds.str() + " s (it goes on)"});
    }
    return report(g, image.error());
  }
  if (g.json) {
    std::cout << imageJson(*image, false).dump(2) << "\n";
  } else {
    std::cout << image->fullName << ": " << image->status;
    if (!image->tags.empty())
      std::cout << " (latest -> " << tagsJson(*image).value("latest", "-") << ")";
    std::cout << "\n";
    if (image->error)
      std::cout << "error[" << image->error->code << "]: " << image->error->message << "\n";
  }
  return image->status == "failed" ? kBuildFailed : kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"imagectl: create and manage private container images built by imaged"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success; 1 the daemon refused the request (or wait/--wait gave up while the "
      "build goes on: E_WAIT_TIMEOUT); 2 usage error; 3 cannot reach the daemon; 4 wait/--wait "
      "ended with the build failed.");
  // Global flags may also follow the command: `imagectl show web --json`.
  app.fallthrough();
  Globals g;
  app.add_option("--socket", g.socket,
                 "the daemon's socket (default: $IMAGED_SOCKET or the usual place)");
  app.add_flag("--json", g.json, "machine-readable output on stdout");
  app.add_option("--timeout", g.timeout, "seconds to wait for each answer")->capture_default_str();

  std::string name, starterName, query, description, tag, at;
  std::vector<std::string> add, remove, env, unsetEnv;
  uint32_t limit = 20;
  uint64_t expectVersion = 0;
  bool wait = false;
  double waitTimeout = 900;
  std::string idempotencyKey;

  auto* starters = app.add_subcommand("starters", "list starter images");
  auto* starter = app.add_subcommand("starter", "a starter's lines, versions, env and SBOM");
  starter->add_option("NAME", starterName)->required();
  auto* search = app.add_subcommand("search", "search packages by name, description or version");
  search->add_option("QUERY", query)->required();
  search->add_option("--limit", limit)->capture_default_str();
  auto* preview =
      app.add_subcommand("preview", "dry run: what each line would get; records nothing");
  preview->add_option("--starter", starterName)->required();
  preview->add_option("--add", add, "an added package (name, provided name or constraint)");
  preview->add_option("--env", env, "KEY=VALUE");
  auto* create = app.add_subcommand("create", "create an image and build it");
  create->add_option("NAME", name)->required();
  create->add_option("--starter", starterName)->required();
  create->add_option("--add", add, "an added package (name, provided name or constraint)");
  create->add_option("--env", env, "KEY=VALUE");
  create->add_option("--description", description);
  create->add_option("--idempotency-key", idempotencyKey, "retry-safe key (default: a fresh one)");
  create->add_flag("--wait", wait, "show the build live and return when it ends");
  auto* list = app.add_subcommand("list", "the tenant's gallery");
  auto* show = app.add_subcommand("show", "one image: status, lines, tags, latest build");
  show->add_option("NAME", name)->required();
  show->add_option("--at", at, "the image as it was at this RFC 3339 time");
  auto* edit = app.add_subcommand("edit", "change added packages, env or description, and rebuild");
  edit->add_option("NAME", name)->required();
  edit->add_option("--add", add);
  edit->add_option("--remove", remove);
  edit->add_option("--env", env, "KEY=VALUE");
  edit->add_option("--unset-env", unsetEnv);
  auto* editDescription = edit->add_option("--description", description);
  std::string newName;
  auto* editStarter = edit->add_option("--starter", starterName,
                                       "refused (E_IMMUTABLE_FIELD) unless it is the image's");
  auto* editName =
      edit->add_option("--name", newName, "refused (E_IMMUTABLE_FIELD) unless it is the image's");
  edit->add_option("--expect-version", expectVersion, "refuse unless the image is at this version");
  edit->add_flag("--wait", wait);
  auto* rebuild = app.add_subcommand("rebuild", "request a new build");
  rebuild->add_option("NAME", name)->required();
  rebuild->add_option("--expect-version", expectVersion);
  rebuild->add_flag("--wait", wait);
  auto* del = app.add_subcommand("delete", "delete an image (its history stays in the log)");
  del->add_option("NAME", name)->required();
  del->add_option("--expect-version", expectVersion);
  auto* tags = app.add_subcommand("tags", "tag -> version (-> digest)");
  tags->add_option("NAME", name)->required();
  tags->add_option("--at", at, "the tags as they were at this RFC 3339 time");
  auto* builds = app.add_subcommand("builds", "build history");
  builds->add_option("NAME", name)->required();
  auto* waitCmd = app.add_subcommand("wait", "block until the image has no build in progress");
  waitCmd->add_option("NAME", name)->required();
  waitCmd
      ->add_option("--timeout", waitTimeout,
                   "seconds; then exit 1 with E_WAIT_TIMEOUT (the build goes on)")
      ->capture_default_str();
  auto* history =
      app.add_subcommand("history", "the image's events, oldest first (a deleted image's too)");
  history->add_option("NAME", name)->required();
  auto* exportCmd = app.add_subcommand("export", "write the image as an OCI image layout in DIR");
  std::string exportDir;
  std::vector<std::string> exportTags;
  exportCmd->add_option("NAME", name)->required();
  exportCmd->add_option("DIR", exportDir)->required();
  exportCmd->add_option("--tag", exportTags, "export this tag (repeatable; default: all tags)");
  auto* tagHistoryCmd = app.add_subcommand(
      "tag-history", "every move of one tag: when, from what, to what, by which build");
  std::string tagName;
  tagHistoryCmd->add_option("NAME", name)->required();
  tagHistoryCmd->add_option("TAG", tagName)->required();
  auto* sbomCmd =
      app.add_subcommand("sbom", "the SPDX SBOM of a built line (--json: the SPDX document)");
  std::string sbomLine;
  sbomCmd->add_option("NAME", name)->required();
  sbomCmd->add_option("--line", sbomLine, "the line (default: the one latest points at)");
  auto* catalog = app.add_subcommand("catalog", "the catalog in force (--reload to reload it)");
  bool reload = false;
  catalog->add_flag("--reload", reload, "reload the catalog from its directory");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  auto client = connect(g);
  if (!client.ok()) return report(g, client.error());
  ic::Client& c = **client;
  auto envVars = parseEnv(env);

  if (*starters) {
    auto r = c.starters();
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json j = ordered_json::array();
      for (const auto& s : *r)
        j.push_back({{"name", s.name}, {"description", s.description}, {"lines", s.lines}});
      std::cout << j.dump(2) << "\n";
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& s : *r) {
        std::string lines;
        for (const auto& l : s.lines) lines += (lines.empty() ? "" : ", ") + l;
        rows.push_back({s.name, lines, s.description});
      }
      table({"STARTER", "LINES", "DESCRIPTION"}, rows);
    }
    return kOk;
  }
  if (*starter) {
    auto r = c.starter(starterName);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json lines = ordered_json::array();
      for (const auto& l : r->lines) {
        ordered_json env = ordered_json::object(), versions = ordered_json::array();
        for (const auto& e : l.environment) env[e.key] = e.value;
        for (const auto& v : l.versions) {
          versions.push_back(
              {{"version", v.version}, {"published", v.published}, {"packages", v.packages}});
        }
        ordered_json sbom = ordered_json::array();
        for (const auto& v : l.versions) {
          if (v.version == l.production) sbom = v.packages;
        }
        lines.push_back({{"line", l.line},
                         {"maintained", l.maintained},
                         {"production", l.production},
                         {"env", env},
                         {"sbom", sbom},
                         {"licenses", l.licenses},
                         {"versions", versions}});
      }
      ordered_json env = ordered_json::object();
      for (const auto& e : r->environment) env[e.key] = e.value;
      std::cout << ordered_json({{"name", r->name},
                                 {"description", r->description},
                                 {"env", env},
                                 {"entrypoint", r->entrypoint},
                                 {"cmd", r->cmd},
                                 {"user", r->user},
                                 {"workdir", r->workdir},
                                 {"lines", lines}})
                       .dump(2)
                << "\n";
    } else {
      std::cout << r->name << ": " << r->description << "\n";
      for (const auto& e : r->environment) std::cout << "  env " << e.key << "=" << e.value << "\n";
      for (const auto& l : r->lines) {
        std::cout << "\nline " << l.line << (l.maintained ? "" : " (not maintained)")
                  << ": production " << l.production << "\n";
        for (const auto& e : l.environment) {  // what the line adds to the starter's env
          const bool inherited =
              std::any_of(r->environment.begin(), r->environment.end(),
                          [&](const auto& s) { return s.key == e.key && s.value == e.value; });
          if (!inherited) std::cout << "  env " << e.key << "=" << e.value << "\n";
        }
        for (const auto& v : l.versions)
          std::cout << "  version " << v.version << "  " << v.published << "\n";
        for (const auto& v : l.versions) {
          if (v.version != l.production) continue;
          std::cout << "  SBOM of " << v.version << ":\n";
          for (size_t i = 0; i < v.packages.size(); ++i) {
            std::cout << "    " << v.packages[i]
                      << (i < l.licenses.size()
                              ? "  (" + l.licenses[i].substr(l.licenses[i].find(": ") + 2) + ")"
                              : "")
                      << "\n";
          }
        }
      }
    }
    return kOk;
  }
  if (*search) {
    auto r = c.search(query, limit);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json j = ordered_json::array();
      for (const auto& h : *r) {
        j.push_back({{"name", h.name},
                     {"version", h.version},
                     {"description", h.description},
                     {"versions", h.versions}});
      }
      std::cout << j.dump(2) << "\n";
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& h : *r) rows.push_back({h.name, h.version, h.description});
      table({"PACKAGE", "VERSION", "DESCRIPTION"}, rows);
    }
    return kOk;
  }
  if (*preview) {
    auto r = c.preview({"", "", starterName, add, *envVars});
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json lines = ordered_json::array();
      for (const auto& l : *r) lines.push_back(lineJson(l));
      std::cout << ordered_json({{"lines", lines}}).dump(2) << "\n";
    } else {
      for (const auto& l : *r) {
        std::cout << "line " << l.line << ": " << lineSummary(l) << "\n";
        for (const auto& p : l.packages) std::cout << "    " << p << "\n";
      }
    }
    return kOk;
  }
  if (*create) {
    auto r = c.create({name, description, starterName, add, *envVars}, idempotencyKey);
    if (!r.ok()) return report(g, r.error());
    if (wait) return waitForBuild(g, c, name, waitTimeout);
    if (g.json) {
      std::cout << imageJson(*r, false).dump(2) << "\n";
    } else {
      std::cout << "created " << r->fullName << " (" << r->status << ")\n";
    }
    return kOk;
  }
  if (*list) {
    auto r = c.list();
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json j = ordered_json::array();
      for (const auto& i : *r) j.push_back(imageJson(i, false));
      std::cout << j.dump(2) << "\n";
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& i : *r) {
        rows.push_back({i.fullName, i.starter, i.status, i.createdAt.empty() ? "-" : i.createdAt,
                        tagsJson(i).value("latest", "-")});
      }
      table({"IMAGE", "STARTER", "STATUS", "CREATED", "LATEST"}, rows);
    }
    return kOk;
  }
  if (*show || *tags || *builds) {
    auto r = c.get(name, at);
    if (!r.ok()) return report(g, r.error());
    if (*tags) {
      if (g.json) {
        std::cout << tagsJson(*r).dump(2) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& t : r->tags)
          rows.push_back({t.tag, t.version, t.digest.empty() ? "-" : t.digest});
        table({"TAG", "VERSION", "DIGEST"}, rows);
      }
    } else if (*builds) {
      if (g.json) {
        std::cout << imageJson(*r, true)["builds"].dump(2) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& b : r->builds) {
          int built = 0;
          for (const auto& l : b.lines) built += l.status == "built";
          rows.push_back({std::to_string(b.number), b.status, b.reason, b.requestedAt,
                          b.endedAt.empty() ? "-" : b.endedAt,
                          std::to_string(built) + "/" + std::to_string(b.lines.size()),
                          b.error ? b.error->code : ""});
        }
        table({"BUILD", "STATUS", "REASON", "REQUESTED", "ENDED", "LINES", "ERROR"}, rows);
      }
    } else if (g.json) {
      std::cout << imageJson(*r, true).dump(2) << "\n";
    } else {
      printImage(*r);
    }
    return kOk;
  }
  if (*edit) {
    ic::ImageEdit e{add, remove, *envVars, unsetEnv, std::nullopt, std::nullopt, std::nullopt};
    if (editDescription->count()) e.description = description;
    if (editStarter->count()) e.starter = starterName;
    if (editName->count()) e.name = newName;
    auto r = c.edit(name, e, expectVersion);
    if (!r.ok()) return report(g, r.error());
    if (wait) return waitForBuild(g, c, name, waitTimeout);
    if (g.json) {
      std::cout << imageJson(*r, false).dump(2) << "\n";
    } else {
      std::cout << "edited " << r->fullName << " (version " << r->version << "), rebuilding\n";
    }
    return kOk;
  }
  if (*rebuild) {
    auto r = c.rebuild(name, expectVersion);
    if (!r.ok()) return report(g, r.error());
    if (wait) return waitForBuild(g, c, name, waitTimeout);
    if (g.json) {
      std::cout << imageJson(*r, false).dump(2) << "\n";
    } else {
      std::cout << "rebuilding " << r->fullName << "\n";
    }
    return kOk;
  }
  if (*del) {
    auto r = c.remove(name, expectVersion);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      std::cout << ordered_json({{"deleted", name}}).dump(2) << "\n";
    } else {
      std::cout << "deleted " << name << "\n";
    }
    return kOk;
  }
  if (*waitCmd) return waitForBuild(g, c, name, waitTimeout);
  if (*history) {
    auto r = c.history(name);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json j = ordered_json::array();
      for (const auto& e : *r) {
        j.push_back({{"sequence", e.sequence},
                     {"version", e.version},
                     {"time", e.time},
                     {"kind", e.kind},
                     {"summary", e.summary},
                     {"actor", e.actor}});
      }
      std::cout << j.dump(2) << "\n";
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : *r)
        rows.push_back({std::to_string(e.sequence), e.time, e.kind, e.summary});
      table({"SEQ", "TIME", "EVENT", "SUMMARY"}, rows);
    }
    return kOk;
  }
  if (*exportCmd) {
    auto r = c.exportImage(name, exportDir, exportTags);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json tags = ordered_json::object();
      for (const auto& t : *r) tags[t.tag] = t.digest;
      std::cout << ordered_json({{"dir", exportDir}, {"tags", tags}}).dump(2) << "\n";
    } else {
      for (const auto& t : *r) std::cout << t.tag << "  " << t.version << "  " << t.digest << "\n";
      std::cout << "wrote an OCI image layout to " << exportDir << "\n";
    }
    return kOk;
  }
  if (*tagHistoryCmd) {
    auto r = c.tagHistory(name, tagName);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      ordered_json j = ordered_json::array();
      for (const auto& m : *r) {
        auto orNull = [](const std::string& s) {
          return s.empty() ? ordered_json(nullptr) : ordered_json(s);
        };
        ordered_json move;
        move["time"] = m.time;
        move["sequence"] = m.sequence;
        move["from"] = orNull(m.fromVersion);
        move["fromDigest"] = orNull(m.fromDigest);
        move["to"] = orNull(m.toVersion);
        move["toDigest"] = orNull(m.toDigest);
        move["build"] = m.buildId;
        move["reason"] = m.reason;
        j.push_back(std::move(move));
      }
      std::cout << j.dump(2) << "\n";
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& m : *r) {
        rows.push_back({m.time, m.fromVersion.empty() ? "-" : m.fromVersion,
                        m.toVersion.empty() ? "-" : m.toVersion, std::to_string(m.buildId),
                        m.reason});
      }
      table({"TIME", "FROM", "TO", "BUILD", "REASON"}, rows);
    }
    return kOk;
  }
  if (*sbomCmd) {
    auto r = c.sbom(name, sbomLine);
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      std::cout << r->spdx << "\n";
      return kOk;
    }
    auto doc = nlohmann::json::parse(r->spdx, nullptr, false);
    std::cout << "SBOM of line " << r->line << " (" << r->version << ")\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : doc["packages"]) {
      if (p.value("primaryPackagePurpose", "") == "CONTAINER") continue;
      rows.push_back(
          {p.value("name", ""), p.value("versionInfo", ""), p.value("licenseDeclared", "")});
    }
    table({"PACKAGE", "VERSION", "LICENSE"}, rows);
    return kOk;
  }
  if (*catalog) {
    auto r = reload ? c.reloadCatalog() : c.catalogInfo();
    if (!r.ok()) return report(g, r.error());
    if (g.json) {
      std::cout << ordered_json({{"digest", r->digest},
                                 {"source", r->source},
                                 {"starters", r->starters},
                                 {"packages", r->packages},
                                 {"problems", r->problems}})
                       .dump(2)
                << "\n";
    } else {
      std::cout << "catalog " << r->digest << "\n  " << r->starters << " starters, " << r->packages
                << " packages\n";
      for (const auto& p : r->problems) std::cout << "  problem: " << p << "\n";
    }
    return kOk;
  }
  return kUsage;
}
