#include "daemon/image/line_image.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/time.h"

namespace imaged::image {
namespace {

std::string sha1Base64(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
  std::string out(4 * ((len + 2) / 3), '\0');
  out.resize(static_cast<size_t>(
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), md, static_cast<int>(len))));
  return out;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

// A package's lines of the apk database before its file list: everything from its index
// record and its control checksum.
std::string recordHeader(const catalog::PackageRecord& r, const std::string& controlChecksum) {
  std::string db;
  if (!controlChecksum.empty()) db += "C:" + controlChecksum + "\n";
  db += "P:" + r.name + "\nV:" + r.version + "\n";
  db += "A:" + (r.arch.empty() ? std::string("x86_64") : r.arch) + "\n";
  db += "S:" + std::to_string(r.size) + "\nI:" + std::to_string(r.installedSize) + "\n";
  db += "T:" + r.description + "\n";
  if (!r.url.empty()) db += "U:" + r.url + "\n";
  db += "L:" + r.license + "\n";
  if (!r.origin.empty()) db += "o:" + r.origin + "\n";
  std::vector<std::string> deps, provides;
  for (const auto& d : r.depends) deps.push_back(d.str());
  for (const auto& p : r.provides)
    provides.push_back(p.version.empty() ? p.name : p.name + "=" + p.version);
  if (!deps.empty()) db += "D:" + join(deps) + "\n";
  if (!provides.empty()) db += "p:" + join(provides) + "\n";
  return db;
}

}  // namespace

std::string installedDatabase(
    const catalog::Catalog& catalog,
    const std::vector<std::pair<catalog::PackageId, const ApkFile*>>& packages) {
  std::string db;
  for (const auto& [id, apk] : packages) {
    db += recordHeader(catalog.package(id), apk->controlChecksum);
    // Files grouped under their directories (F:), each with its checksum (Z:).
    std::map<std::string, std::vector<const FileEntry*>> byDir;
    for (const FileEntry& f : apk->files) {
      if (f.type == FileEntry::Type::kDirectory) {
        byDir[f.path];
        continue;
      }
      const size_t slash = f.path.rfind('/');
      byDir[slash == std::string::npos ? "" : f.path.substr(0, slash)].push_back(&f);
    }
    for (const auto& [dir, files] : byDir) {
      if (!dir.empty()) db += "F:" + dir + "\n";
      for (const FileEntry* f : files) {
        const size_t slash = f->path.rfind('/');
        db += "R:" + (slash == std::string::npos ? f->path : f->path.substr(slash + 1)) + "\n";
        if (f->type == FileEntry::Type::kFile) db += "Z:Q1" + sha1Base64(f->data) + "\n";
      }
    }
    db += "\n";
  }
  return db;
}

namespace {

std::string spdxId(const std::string& name) {
  std::string id = "SPDXRef-Package-";
  for (char c : name)
    id += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '-';
  return id;
}

}  // namespace

std::string spdxSbom(const LineImageInput& in) {
  const catalog::Catalog& catalog = *in.catalog;
  std::vector<catalog::PackageId> ids = in.packages;
  std::sort(ids.begin(), ids.end(), [&](catalog::PackageId a, catalog::PackageId b) {
    return catalog.package(a).name < catalog.package(b).name;
  });
  nlohmann::json packages = nlohmann::json::array(), relationships = nlohmann::json::array();
  const std::string imageId = "SPDXRef-Image";
  packages.push_back({{"SPDXID", imageId},
                      {"name", in.tenant + "/" + in.starter},
                      {"versionInfo", in.version},
                      {"downloadLocation", "NOASSERTION"},
                      {"filesAnalyzed", false},
                      {"primaryPackagePurpose", "CONTAINER"}});
  relationships.push_back({{"spdxElementId", "SPDXRef-DOCUMENT"},
                           {"relationshipType", "DESCRIBES"},
                           {"relatedSpdxElement", imageId}});
  std::string identity;
  for (catalog::PackageId id : ids) {
    const catalog::PackageRecord& r = catalog.package(id);
    identity += r.name + "=" + r.version + "\n";
    const std::string arch = r.arch.empty() ? "x86_64" : r.arch;
    packages.push_back(
        {{"SPDXID", spdxId(r.name)},
         {"name", r.name},
         {"versionInfo", r.version},
         {"downloadLocation", "NOASSERTION"},
         {"filesAnalyzed", false},
         {"licenseDeclared", r.license.empty() ? "NOASSERTION" : r.license},
         {"licenseConcluded", "NOASSERTION"},
         {"description", r.description},
         {"externalRefs",
          nlohmann::json::array(
              {{{"referenceCategory", "PACKAGE-MANAGER"},
                {"referenceType", "purl"},
                {"referenceLocator", "pkg:apk/" + r.name + "@" + r.version + "?arch=" + arch}}})}});
    relationships.push_back({{"spdxElementId", imageId},
                             {"relationshipType", "CONTAINS"},
                             {"relatedSpdxElement", spdxId(r.name)}});
    for (const catalog::Atom& d : r.depends) {
      if (d.conflict) continue;
      for (catalog::PackageId other : ids) {
        if (other == id) continue;
        const catalog::PackageRecord& o = catalog.package(other);
        bool provides = o.name == d.name;
        for (const auto& p : o.provides) provides = provides || p.name == d.name;
        if (provides) {
          relationships.push_back({{"spdxElementId", spdxId(r.name)},
                                   {"relationshipType", "DEPENDS_ON"},
                                   {"relatedSpdxElement", spdxId(o.name)}});
          break;
        }
      }
    }
  }
  const std::string name = in.tenant + "/" + in.starter + ":" + in.version;
  return nlohmann::json{{"spdxVersion", "SPDX-2.3"},
                        {"dataLicense", "CC0-1.0"},
                        {"SPDXID", "SPDXRef-DOCUMENT"},
                        {"name", name},
                        {"documentNamespace", "https://imaged.invalid/spdx/" +
                                                  sha256Digest(name + "\n" + identity).substr(7)},
                        {"creationInfo",
                         {{"created", formatTime(parseTime(in.published).value_or(0))},
                          {"creators", nlohmann::json::array({"Tool: imaged"})}}},
                        {"packages", packages},
                        {"relationships", relationships}}
      .dump();
}

namespace {

// Reads and verifies every package file, and writes their files, with the apk database and
// world, as one layer.
template <typename PathOf>
Result<BlobStore::Derived> writePackagesLayer(const LineImageInput& in,
                                              const std::vector<catalog::PackageId>& ids,
                                              const std::vector<std::string>& sortedWorld,
                                              int64_t created, PathOf&& pathOf, BlobStore& blobs) {
  const catalog::Catalog& catalog = *in.catalog;
  std::vector<ApkFile> apks;
  apks.reserve(ids.size());
  for (catalog::PackageId id : ids) {
    auto apk = readApk(pathOf(id), catalog.package(id).checksum);
    if (!apk.ok()) return apk.error();
    apks.push_back(std::move(apk).value());
  }
  // One file per path: a later package (by name) does not overwrite an earlier one's file.
  std::map<std::string, FileEntry> files;
  std::vector<std::pair<catalog::PackageId, const ApkFile*>> installed;
  for (size_t i = 0; i < ids.size(); ++i) {
    installed.emplace_back(ids[i], &apks[i]);
    for (const FileEntry& f : apks[i].files) files.emplace(f.path, f);
  }
  auto add = [&](const std::string& path, std::string data) {
    FileEntry f;
    f.path = path;
    f.data = std::move(data);
    f.uname = f.gname = "root";
    files[path] = std::move(f);
  };
  add("lib/apk/db/installed", installedDatabase(catalog, installed));
  std::string world;
  for (const auto& w : sortedWorld) world += w + "\n";
  add("etc/apk/world", world);

  std::vector<FileEntry> list;
  for (auto& [path, f] : files) list.push_back(std::move(f));
  auto layer = writeLayer(std::move(list), created);
  if (!layer.ok()) return layer.error();
  auto layerBlob = blobs.put(layer->tarGz, kLayerMediaType);
  if (!layerBlob.ok()) return layerBlob.error();
  return BlobStore::Derived{{*layerBlob}, layer->diffId};
}

}  // namespace

Result<LineImage> writeLineImage(const LineImageInput& in, BlobStore& blobs) {
  const catalog::Catalog& catalog = *in.catalog;
  std::vector<catalog::PackageId> ids = in.packages;
  std::sort(ids.begin(), ids.end(), [&](catalog::PackageId a, catalog::PackageId b) {
    return catalog.package(a).name < catalog.package(b).name;
  });
  auto pathOf = [&](catalog::PackageId id) {
    const catalog::PackageRecord& r = catalog.package(id);
    return catalog.repositories()[catalog.repositoryOf(id)].path + "/" + r.name + "-" + r.version +
           ".apk";
  };
  std::vector<std::string> sortedWorld = in.world;
  std::sort(sortedWorld.begin(), sortedWorld.end());
  const int64_t created = parseTime(in.published).value_or(0) / 1'000'000'000;

  // The layer's bytes follow from the packages' index records and control checksums (each
  // .apk is verified against its record's C: before use), the world and the time; the whole
  // image's from those and the config's and SBOM's inputs. What was written for the same inputs
  // is used again (a rebuild of an unchanged line, images with the same packages), unless a
  // package file has gone meanwhile (then the full path reports it) or a blob was collected.
  std::string inputs = "imaged-layer-1\n" + std::to_string(created) + "\n";
  bool cacheable = true;
  for (catalog::PackageId id : ids) {
    const catalog::PackageRecord& r = catalog.package(id);
    cacheable = cacheable && !r.checksum.empty();
    inputs += recordHeader(r, r.checksum) + "\n";
  }
  for (const auto& w : sortedWorld) inputs += "world:" + w + "\n";
  const std::string layerKey = sha256Digest(inputs);
  inputs += "imaged-image-1\n" + in.tenant + "\n" + in.starter + "\n" + in.line + "\n" +
            in.version + "\n" + in.published + "\n" + in.user + "\n" + in.workdir + "\n";
  for (const auto& [k, v] : in.env) inputs += "env:" + k + "=" + v + "\n";
  for (const auto& e : in.entrypoint) inputs += "entrypoint:" + e + "\n";
  for (const auto& c : in.cmd) inputs += "cmd:" + c + "\n";
  const std::string imageKey = sha256Digest(inputs);
  // Found intact moments ago (BlobStore::recheckAfter, a second in the daemon), an entry is
  // used without looking again: a package file removed within that second goes unnoticed
  // until the next check, the blobs cannot have been collected (they were refreshed then).
  auto usable = [&](const std::string& key) -> std::optional<BlobStore::Derived> {
    bool recent = false;
    auto d = blobs.derived(key, &recent);
    if (!d || recent) return d;
    std::error_code ec;
    for (catalog::PackageId id : ids) {
      if (!std::filesystem::exists(pathOf(id), ec)) return std::nullopt;
    }
    if (!blobs.refreshAll(*d)) return std::nullopt;
    blobs.markChecked(key);
    return d;
  };
  if (cacheable) {
    if (auto image = usable(imageKey)) {
      return LineImage{image->blobs[0], image->blobs[1]};
    }
  }
  std::optional<BlobStore::Derived> layer;
  if (cacheable) layer = usable(layerKey);
  if (!layer) {
    auto written = writePackagesLayer(in, ids, sortedWorld, created, pathOf, blobs);
    if (!written.ok()) return written.error();
    layer = *written;
    if (cacheable) blobs.remember(layerKey, *layer);
  }
  const Descriptor layerBlob = layer->blobs[0];

  ImageConfig config;
  config.env = in.env;
  config.entrypoint = in.entrypoint;
  config.cmd = in.cmd;
  config.user = in.user;
  config.workdir = in.workdir;
  config.created = formatTime(created * 1'000'000'000);
  config.labels = {{"io.imaged.private-image", "true"},
                   {"io.imaged.tenant", in.tenant},
                   {"io.imaged.starter", in.starter},
                   {"io.imaged.line", in.line},
                   {"io.imaged.version", in.version}};
  auto configBlob = blobs.put(configJson(config, {layer->note}), kConfigMediaType);
  if (!configBlob.ok()) return configBlob.error();
  auto manifest = blobs.put(manifestJson(*configBlob, {layerBlob}), kManifestMediaType);
  if (!manifest.ok()) return manifest.error();
  LineImageInput sorted = in;
  sorted.packages = ids;
  auto sbom = blobs.put(spdxSbom(sorted), kSpdxMediaType);
  if (!sbom.ok()) return sbom.error();
  if (cacheable) blobs.remember(imageKey, {{*manifest, *sbom, *configBlob, layerBlob}, ""});
  return LineImage{*manifest, *sbom};
}

}  // namespace imaged::image
