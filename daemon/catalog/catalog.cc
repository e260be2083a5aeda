#include "daemon/catalog/catalog.h"

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/sha256.h"
#include "daemon/catalog/version.h"

namespace imaged::catalog {
namespace fs = std::filesystem;
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// At most maxBytes of the file. Its errors do not name the file: the problem reported does.
Result<std::string> readFile(const fs::path& path, size_t maxBytes) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return Error{"E_CATALOG_INVALID", ec.message()};
  if (size > maxBytes) {
    return Error{"E_CATALOG_INVALID", "larger than " + std::to_string(maxBytes >> 20) + " MiB"};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"E_CATALOG_INVALID", "cannot be read"};
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

std::vector<fs::path> sortedEntries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Words of a query, lowercased.
std::vector<std::string> words(std::string_view q) {
  std::vector<std::string> out;
  std::istringstream in{std::string(q)};
  for (std::string w; in >> w;) out.push_back(lower(w));
  return out;
}

}  // namespace

std::string Catalog::label(PackageId id) const {
  const PackageRecord& r = package(id);
  return r.name + "-" + r.version;
}

const Starter* Catalog::findStarter(std::string_view name) const {
  auto it = std::lower_bound(starters_.begin(), starters_.end(), name,
                             [](const Starter& s, std::string_view n) { return s.name < n; });
  return it != starters_.end() && it->name == name ? &*it : nullptr;
}

std::span<const PackageId> Catalog::named(std::string_view name) const {
  auto it = byName_.find(name);
  if (it == byName_.end()) return {};
  return it->second.records;
}

bool Catalog::knows(std::string_view name) const {
  return byName_.count(name) > 0 || byProvide_.count(name) > 0;
}

std::vector<std::string_view> Catalog::slots(PackageId id) const {
  const PackageRecord& r = package(id);
  std::vector<std::string_view> out{r.name};
  for (const Provide& p : r.provides) {
    if (!p.version.empty() && std::find(out.begin(), out.end(), p.name) == out.end()) {
      out.push_back(p.name);
    }
  }
  return out;
}

std::span<const PackageId> Catalog::slotMembers(std::string_view name) const {
  auto it = slotMembers_.find(name);
  if (it == slotMembers_.end()) return {};
  return it->second;
}

std::vector<PackageId> Catalog::candidates(const Atom& atom) const {
  struct Candidate {
    PackageId id;
    bool direct;
    std::string_view version;  // the record's, or the provided version ("" when unversioned)
  };
  std::vector<Candidate> found;
  if (auto it = byName_.find(atom.name); it != byName_.end()) {
    for (PackageId id : it->second.records) {
      if (versionSatisfies(atom, package(id).version))
        found.push_back({id, true, package(id).version});
    }
  }
  if (auto it = byProvide_.find(atom.name); it != byProvide_.end()) {
    for (const ProvideRef& ref : it->second) {
      const Provide& p = package(ref.id).provides[ref.provide];
      if (p.version.empty() ? atom.op != VersionOp::kAny : !versionSatisfies(atom, p.version))
        continue;
      found.push_back({ref.id, false, p.version});
    }
  }
  // Records of the very name come newest first already; only providers need ordering.
  const bool onlyDirect =
      std::all_of(found.begin(), found.end(), [](const Candidate& c) { return c.direct; });
  if (!onlyDirect)
    std::stable_sort(found.begin(), found.end(), [&](const Candidate& a, const Candidate& b) {
      if (a.direct != b.direct) return a.direct;
      if (a.version.empty() != b.version.empty()) return b.version.empty();
      if (int c = compareVersions(a.version, b.version); c != 0) return c > 0;
      const PackageRecord& ra = package(a.id);
      const PackageRecord& rb = package(b.id);
      if (ra.providerPriority != rb.providerPriority)
        return ra.providerPriority > rb.providerPriority;
      if (int c = compareVersions(ra.version, rb.version); c != 0) return c > 0;
      if (ra.depends.size() != rb.depends.size()) return ra.depends.size() < rb.depends.size();
      if (ra.name != rb.name) return ra.name < rb.name;
      return a.id < b.id;  // ids follow repository order
    });
  std::vector<PackageId> out;
  out.reserve(found.size());
  for (const Candidate& c : found) {
    if (std::find(out.begin(), out.end(), c.id) == out.end()) out.push_back(c.id);
  }
  return out;
}

std::vector<SearchHit> Catalog::search(std::string_view query, size_t limit) const {
  const std::vector<std::string> qwords = words(query);
  if (qwords.empty() || limit == 0) return {};
  std::string q;
  for (const auto& w : qwords) q += (q.empty() ? "" : " ") + w;
  const bool versionLike = q[0] >= '0' && q[0] <= '9';

  std::vector<std::pair<int, std::string_view>> ranked;
  for (std::string_view name : sortedNames_) {
    const NameInfo& info = byName_.at(name);
    int rank = -1;
    if (info.lowerName == q) {
      rank = 0;
    } else if (info.lowerName.starts_with(q)) {
      rank = 1;
    } else if (info.lowerName.find(q) != std::string::npos) {
      rank = 2;
    } else if (versionLike &&
               std::any_of(info.records.begin(), info.records.end(),
                           [&](PackageId id) { return fuzzyMatch(package(id).version, q); })) {
      rank = 3;
    } else if (std::all_of(qwords.begin(), qwords.end(), [&](const std::string& w) {
                 return info.lowerDescription.find(w) != std::string::npos;
               })) {
      rank = 4;
    }
    if (rank >= 0) ranked.emplace_back(rank, name);
  }
  const size_t n = std::min(limit, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(n), ranked.end());
  std::vector<SearchHit> hits;
  for (size_t i = 0; i < n; ++i) {
    const NameInfo& info = byName_.at(ranked[i].second);
    const PackageRecord& newest = package(info.records.front());
    SearchHit hit{newest.name, newest.version, newest.description, {}, ranked[i].first};
    for (PackageId id : info.records) {
      if (std::find(hit.versions.begin(), hit.versions.end(), package(id).version) ==
          hit.versions.end()) {
        hit.versions.push_back(package(id).version);
      }
    }
    hits.push_back(std::move(hit));
  }
  return hits;
}

void Catalog::index() {
  for (uint32_t r = 0; r < repositories_.size(); ++r) {
    for (const PackageRecord& record : repositories_[r].records) packages_.push_back({&record, r});
  }
  for (PackageId id = 0; id < packages_.size(); ++id) {
    const PackageRecord& r = package(id);
    byName_[r.name].records.push_back(id);
    for (uint32_t p = 0; p < r.provides.size(); ++p)
      byProvide_[r.provides[p].name].push_back({id, p});
    for (std::string_view slot : slots(id)) slotMembers_[slot].push_back(id);
  }
  for (auto& [name, info] : byName_) {
    std::stable_sort(info.records.begin(), info.records.end(), [&](PackageId a, PackageId b) {
      return compareVersions(package(a).version, package(b).version) > 0;
    });
    info.lowerName = lower(name);
    info.lowerDescription = lower(package(info.records.front()).description);
    sortedNames_.push_back(name);
  }
  std::sort(sortedNames_.begin(), sortedNames_.end());
}

void Catalog::checkStarters() {
  std::vector<Starter> offered;
  std::set<std::string> names;
  for (Starter& s : starters_) {
    if (names.count(s.name)) {
      problems_.push_back(
          {s.file, 0, "starter " + s.name + " is defined again; this one is ignored", true});
      continue;
    }
    std::string missing;
    for (const StarterLine& line : s.lines) {
      for (const StarterVersion& v : line.versions) {
        for (const Pin& pin : v.packages) {
          const Atom exact{pin.name, VersionOp::kEqual, pin.version, false};
          const auto named = this->named(pin.name);
          const bool found = std::any_of(named.begin(), named.end(), [&](PackageId id) {
            return versionSatisfies(exact, package(id).version);
          });
          if (!found && missing.empty()) {
            missing = "line " + line.line + " version " + v.version + " pins " + pin.name + "=" +
                      pin.version + ", which no repository has";
          }
        }
      }
    }
    if (!missing.empty()) {
      problems_.push_back({s.file, 0, "starter " + s.name + " is not offered: " + missing, true});
      continue;
    }
    names.insert(s.name);
    offered.push_back(std::move(s));
  }
  std::sort(offered.begin(), offered.end(),
            [](const Starter& a, const Starter& b) { return a.name < b.name; });
  starters_ = std::move(offered);
}

void Catalog::computeDigest() {
  // Length-prefixed fields, one line per fact, sorted wherever the source order means nothing.
  auto field = [](std::string& out, std::string_view f) {
    out += std::to_string(f.size());
    out += ':';
    out += f;
    out += ' ';
  };
  std::string text = "imaged-catalog/1\n";
  for (const Repository& repo : repositories_) {
    std::vector<std::string> records;
    for (const PackageRecord& r : repo.records) {
      std::string line;
      for (std::string_view f : {std::string_view(r.name), std::string_view(r.version),
                                 std::string_view(r.arch), std::string_view(r.license),
                                 std::string_view(r.checksum), std::string_view(r.description)}) {
        field(line, f);
      }
      field(line, std::to_string(r.providerPriority));
      for (const Atom& a : r.depends) field(line, "D" + a.str());
      for (const Provide& p : r.provides) field(line, "p" + p.name + "=" + p.version);
      records.push_back(std::move(line));
    }
    std::sort(records.begin(), records.end());
    text += "repository ";
    field(text, repo.name);
    text += '\n';
    for (const auto& r : records) text += r + '\n';
  }
  for (const Starter& s : starters_) {
    text += "starter ";
    for (std::string_view f : {std::string_view(s.name), std::string_view(s.description),
                               std::string_view(s.user), std::string_view(s.workdir)}) {
      field(text, f);
    }
    for (const EnvVar& e : s.environment) field(text, "E" + e.key + "=" + e.value);
    for (const auto& e : s.entrypoint) field(text, "entrypoint " + e);
    for (const auto& c : s.cmd) field(text, "cmd " + c);
    text += '\n';
    for (const StarterLine& l : s.lines) {
      text += " line ";
      field(text, l.line);
      field(text, l.maintained ? "maintained" : "unmaintained");
      for (const EnvVar& e : l.environment) field(text, "E" + e.key + "=" + e.value);
      text += '\n';
      for (const StarterVersion& v : l.versions) {
        std::vector<std::string> pins;
        for (const Pin& p : v.packages) pins.push_back(p.name + "=" + p.version);
        std::sort(pins.begin(), pins.end());
        text += "  version ";
        field(text, v.version);
        field(text, v.published);
        for (const auto& p : pins) field(text, p);
        text += '\n';
      }
    }
  }
  digest_ = sha256Digest(text);
}

std::shared_ptr<const Catalog> Catalog::build(std::vector<Repository> repositories,
                                              std::vector<Starter> starters,
                                              std::vector<CatalogProblem> problems) {
  std::shared_ptr<Catalog> c(new Catalog());
  std::sort(repositories.begin(), repositories.end(),
            [](const Repository& a, const Repository& b) { return a.name < b.name; });
  c->repositories_ = std::move(repositories);
  c->starters_ = std::move(starters);
  c->problems_ = std::move(problems);
  c->index();
  c->checkStarters();
  c->computeDigest();
  return c;
}

Result<std::shared_ptr<const Catalog>> Catalog::load(const std::string& dir,
                                                     const Options& options) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return Error{"E_CATALOG_INVALID", dir + " is not a directory"};
  const fs::path starterDir = root / "starters", repoDir = root / "repositories";
  if (!fs::is_directory(starterDir, ec)) {
    return Error{"E_CATALOG_INVALID", dir + " has no starters/ folder"};
  }
  if (!fs::is_directory(repoDir, ec)) {
    return Error{"E_CATALOG_INVALID", dir + " has no repositories/ folder"};
  }

  std::vector<CatalogProblem> problems;
  std::vector<Repository> repositories;
  for (const fs::path& repo : sortedEntries(repoDir)) {
    if (!fs::is_directory(repo, ec)) continue;
    const fs::path archDir = repo / options.arch;
    if (!fs::is_directory(archDir, ec)) {
      problems.push_back(
          {repo.string(), 0, "no " + options.arch + "/ folder; repository ignored", false});
      continue;
    }
    Result<std::string> text = Error{};
    fs::path indexPath = archDir / "APKINDEX";
    if (fs::exists(indexPath, ec)) {
      text = readFile(indexPath, kMaxIndexBytes);
    } else {
      indexPath = archDir / "APKINDEX.tar.gz";
      if (!fs::exists(indexPath, ec)) {
        problems.push_back(
            {archDir.string(), 0, "no APKINDEX or APKINDEX.tar.gz; repository ignored", true});
        continue;
      }
      text = readIndexArchive(indexPath.string());
    }
    if (!text.ok()) {
      problems.push_back({indexPath.string(), 0, text.error().message, true});
      continue;
    }
    ParsedIndex parsed = parseApkIndex(*text, indexPath.string());
    for (auto& p : parsed.problems) problems.push_back({p.file, p.line, p.message, true});
    Repository r{repo.filename().string(), archDir.string(), {}, false};
    for (const fs::path& file : sortedEntries(archDir)) {
      if (file.extension() == ".apk") {
        r.hasPackageFiles = true;
        break;
      }
    }
    size_t otherArch = 0;
    for (auto& rec : parsed.records) {
      if (!rec.arch.empty() && rec.arch != options.arch && rec.arch != "noarch") {
        ++otherArch;
        continue;
      }
      r.records.push_back(std::move(rec));
    }
    if (otherArch > 0) {
      problems.push_back({indexPath.string(), 0,
                          std::to_string(otherArch) + " records for other architectures ignored",
                          false});
    }
    repositories.push_back(std::move(r));
  }

  std::vector<Starter> starters;
  for (const fs::path& file : sortedEntries(starterDir)) {
    const std::string ext = file.extension().string();
    if (ext != ".yaml" && ext != ".yml" && ext != ".json") continue;
    auto text = readFile(file, kMaxStarterFileBytes);
    if (!text.ok()) {
      problems.push_back({file.string(), 0, text.error().message, true});
      continue;
    }
    auto starter = parseStarter(*text, file.string(), &problems);
    if (starter.ok()) starters.push_back(std::move(starter).value());
  }
  return build(std::move(repositories), std::move(starters), std::move(problems));
}

}  // namespace imaged::catalog
