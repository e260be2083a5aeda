// Image output: apk files read and verified, layers and manifests written reproducibly, and the
// result accepted by real tools (skopeo, umoci).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "daemon/catalog/resolver.h"
#include "daemon/image/apk_file.h"
#include "daemon/image/line_image.h"
#include "daemon/image/oci.h"
#include "tests/common/temp_dir.h"

namespace imaged::image {
namespace {

namespace fs = std::filesystem;
using imaged::testing::TempDir;

const std::string kApko = std::string(IMAGED_SHARED_DATA) + "/apko-testdata/x86_64";
const std::string kSample = std::string(IMAGED_SOURCE_DIR) + "/catalog/sample";

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

bool hasTool(const char* tool) {
  return std::system((std::string("command -v ") + tool + " >/dev/null").c_str()) == 0;
}

// Entries of a gzip'd tar held in memory: path -> content (or link target).
std::map<std::string, std::string> untar(const std::string& tarGz) {
  std::map<std::string, std::string> out;
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_open_memory(a.get(), tarGz.data(), tarGz.size());
  archive_entry* e;
  while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    std::string data;
    if (archive_entry_symlink(e)) {
      data = std::string("-> ") + archive_entry_symlink(e);
    } else {
      data.resize(static_cast<size_t>(archive_entry_size(e)));
      if (!data.empty()) archive_read_data(a.get(), data.data(), data.size());
    }
    out[archive_entry_pathname(e)] = data;
  }
  return out;
}

TEST(Apk, ReadsARealSignedPackageAndVerifiesItAgainstTheIndex) {
  auto apk = readApk(kApko + "/replayout-1.0.0-r0.apk", "Q11/HhSewwwOXgl0r0ffb0O0BRtYc=");
  ASSERT_TRUE(apk.ok()) << apk.error().message;
  EXPECT_NE(apk->pkginfo.find("pkgname = replayout"), std::string::npos);
  EXPECT_EQ(apk->dataHash, "ce688706f6aa287b05f02c507876b43389992b08fb4f84f99117bd5694e45d4c");
  ASSERT_FALSE(apk->files.empty());
  EXPECT_TRUE(std::any_of(apk->files.begin(), apk->files.end(),
                          [](const FileEntry& f) { return f.path.rfind("etc", 0) == 0; }));
}

TEST(Apk, AChecksumThatDoesNotMatchTheIndexIsCorrupt) {
  auto apk = readApk(kApko + "/replayout-1.0.0-r0.apk", "Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
  ASSERT_FALSE(apk.ok());
  EXPECT_EQ(apk.error().code, "E_PACKAGE_CORRUPT");
  EXPECT_NE(apk.error().message.find("replayout-1.0.0-r0.apk"), std::string::npos);
}

TEST(Apk, AChangedByteInTheDataIsCorruptAndAMissingFileIsMissing) {
  TempDir dir;
  std::string bytes = readText(kApko + "/replayout-1.0.0-r0.apk");
  bytes[bytes.size() - 40] ^= 0x55;  // inside the data segment
  imaged::testing::writeFile(dir.sub("bad.apk"), bytes);
  auto bad = readApk(dir.sub("bad.apk"), "");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "E_PACKAGE_CORRUPT");
  auto missing = readApk(dir.sub("nothing.apk"), "");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, "E_PACKAGE_MISSING");
}

TEST(Apk, PathsThatLeaveTheRootAreRefused) {
  EXPECT_EQ(*safeRelativePath("./usr/bin/x"), "usr/bin/x");
  EXPECT_EQ(*safeRelativePath("usr//lib/"), "usr/lib");
  for (const char* bad : {"../../etc/passwd", "usr/../../x", "/etc/passwd", "", "."}) {
    auto r = safeRelativePath(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  // A package that carries such a path is refused whole.
  TempDir dir;
  const std::string script =
      "import io,tarfile,gzip,hashlib\n"
      "def seg(entries, cut):\n"
      "  b=io.BytesIO(); t=tarfile.open(fileobj=b,mode='w',format=tarfile.USTAR_FORMAT)\n"
      "  for n,d in entries:\n"
      "    i=tarfile.TarInfo(n); i.size=len(d); t.addfile(i,io.BytesIO(d))\n"
      "  end=t.offset; t.close(); raw=b.getvalue()[:end] if cut else b.getvalue()\n"
      "  o=io.BytesIO(); g=gzip.GzipFile(fileobj=o,mode='wb',mtime=0); g.write(raw); g.close(); "
      "return o.getvalue()\n"
      "data=seg([('../../etc/passwd',b'root::0:0')],False)\n"
      "ctl=seg([('.PKGINFO',b'pkgname = evil\\ndatahash = "
      "'+hashlib.sha256(data).hexdigest().encode()+b'\\n')],True)\n"
      "open('" +
      dir.sub("evil.apk") + "','wb').write(ctl+data)\n";
  imaged::testing::writeFile(dir.sub("make.py"), script);
  ASSERT_EQ(std::system(("python3 " + dir.sub("make.py")).c_str()), 0);
  auto evil = readApk(dir.sub("evil.apk"), "");
  ASSERT_FALSE(evil.ok());
  EXPECT_EQ(evil.error().code, "E_PACKAGE_CORRUPT");
  EXPECT_NE(evil.error().message.find("leaves the root"), std::string::npos)
      << evil.error().message;
}

TEST(Apk, EverySamplePackageMatchesItsIndexChecksum) {
  auto c = *catalog::Catalog::load(kSample);
  for (catalog::PackageId id = 0; id < c->packageCount(); ++id) {
    const auto& r = c->package(id);
    auto apk =
        readApk(c->repositories()[0].path + "/" + r.name + "-" + r.version + ".apk", r.checksum);
    EXPECT_TRUE(apk.ok()) << r.name << ": " << (apk.ok() ? "" : apk.error().message);
  }
}

// The image of python line 3.13 with py3-flask, from the sample catalog.
LineImageInput pythonLine(const std::shared_ptr<const catalog::Catalog>& c) {
  const catalog::Starter& s = *c->findStarter("python");
  const catalog::StarterLine& line = s.lines[0];
  auto resolved = catalog::resolveLine(
      *c, {line.line, line.production().packages, {*catalog::parseAtom("py3-flask")}});
  EXPECT_TRUE(resolved.ok());
  LineImageInput in;
  in.catalog = c;
  in.packages = resolved.packages;
  in.tenant = "acme";
  in.starter = "python";
  in.line = line.line;
  in.version = line.production().version;
  in.published = line.production().published;
  for (const auto& e : s.environmentFor(line)) in.env.emplace_back(e.key, e.value);
  in.env.emplace_back("APP_MODE", "prod");
  in.entrypoint = s.entrypoint;
  in.cmd = s.cmd;
  in.user = s.user;
  in.workdir = s.workdir;
  for (const auto& p : line.production().packages) in.world.push_back(p.name + "=" + p.version);
  in.world.push_back("py3-flask");
  return in;
}

TEST(LineImage, TheSameInputsGiveTheSameDigestsInAnyBlobStore) {
  auto c = *catalog::Catalog::load(kSample);
  TempDir a, b;
  BlobStore storeA(a.path()), storeB(b.path());
  auto first = writeLineImage(pythonLine(c), storeA);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto again = writeLineImage(pythonLine(c), storeA);
  auto elsewhere = writeLineImage(pythonLine(c), storeB);
  ASSERT_TRUE(again.ok() && elsewhere.ok());
  EXPECT_EQ(again->manifest.digest, first->manifest.digest);
  EXPECT_EQ(elsewhere->manifest.digest, first->manifest.digest);
  EXPECT_EQ(elsewhere->sbom.digest, first->sbom.digest);
  EXPECT_EQ(first->manifest.mediaType, kManifestMediaType);
}

TEST(LineImage, HoldsThePackagesFilesTheApkDatabaseAndTheConfigAsPromised) {
  auto c = *catalog::Catalog::load(kSample);
  TempDir dir;
  BlobStore store(dir.path());
  auto written = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(written.ok()) << written.error().message;
  auto m = nlohmann::json::parse(*store.read(written->manifest.digest));
  auto config = nlohmann::json::parse(*store.read(m["config"]["digest"]));
  EXPECT_EQ(config["config"]["Labels"]["io.imaged.private-image"], "true");
  EXPECT_EQ(config["config"]["Labels"]["io.imaged.tenant"], "acme");
  EXPECT_EQ(config["config"]["Labels"]["io.imaged.line"], "3.13");
  EXPECT_EQ(config["config"]["Labels"]["io.imaged.version"], "3.13.1");
  EXPECT_EQ(config["config"]["Entrypoint"], nlohmann::json::array({"/usr/bin/python3"}));
  EXPECT_EQ(config["config"]["User"], "65532");
  EXPECT_EQ(config["created"], "2026-11-20T00:00:00Z");
  const auto env = config["config"]["Env"];
  EXPECT_NE(std::find(env.begin(), env.end(), "APP_MODE=prod"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "PYTHON_VERSION=3.13"), env.end());

  auto files = untar(*store.read(m["layers"][0]["digest"]));
  EXPECT_EQ(files["usr/bin/python3"], "-> python3.13");
  EXPECT_NE(files["usr/bin/python3.13"].find("Python 3.13.1"), std::string::npos);
  EXPECT_TRUE(files.count("usr/lib/python3.13/site-packages/flask/__init__.py"));
  const std::string db = files["lib/apk/db/installed"];
  EXPECT_NE(db.find("P:py3.13-flask\nV:3.1.0-r0\n"), std::string::npos);
  EXPECT_NE(db.find("C:Q1"), std::string::npos);
  EXPECT_NE(db.find("R:flask\nZ:Q1"), std::string::npos);
  EXPECT_NE(files["etc/apk/world"].find("py3-flask\n"), std::string::npos);
}

TEST(LineImage, AnExportedLayoutIsReadBySkopeoAndUnpackedByUmoci) {
  if (!hasTool("skopeo") || !hasTool("umoci")) GTEST_SKIP() << "needs skopeo and umoci";
  auto c = *catalog::Catalog::load(kSample);
  TempDir dir;
  BlobStore store(dir.sub("blobs"));
  auto written = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(written.ok());
  const Descriptor manifest = written->manifest;
  ASSERT_TRUE(
      writeLayout(store, {{"3.13", manifest}, {"latest", manifest}}, dir.sub("layout")).ok());
  const std::string inspect =
      "skopeo inspect oci:" + dir.sub("layout") + ":latest > " + dir.sub("inspect.json");
  ASSERT_EQ(std::system(inspect.c_str()), 0);
  auto info = nlohmann::json::parse(readText(dir.sub("inspect.json")));
  EXPECT_EQ(info["Labels"]["io.imaged.starter"], "python");
  const std::string unpack = "umoci unpack --rootless --image " + dir.sub("layout") + ":3.13 " +
                             dir.sub("bundle") + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(unpack.c_str()), 0);
  EXPECT_TRUE(fs::exists(dir.sub("bundle/rootfs/lib/apk/db/installed")));
  EXPECT_TRUE(fs::is_symlink(dir.sub("bundle/rootfs/usr/bin/python3")));
  EXPECT_NE(readText(dir.sub("bundle/rootfs/etc/ssl/certs/ca-certificates.crt")).find("CA bundle"),
            std::string::npos);
}

TEST(LineImage, TheSbomIsSpdx23WithEveryPackageItsLicenseAndPurl) {
  auto c = *catalog::Catalog::load(kSample);
  TempDir dir;
  BlobStore store(dir.path());
  auto written = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->sbom.mediaType, kSpdxMediaType);
  auto sbom = nlohmann::json::parse(*store.read(written->sbom.digest));
  EXPECT_EQ(sbom["spdxVersion"], "SPDX-2.3");
  EXPECT_EQ(sbom["dataLicense"], "CC0-1.0");
  EXPECT_EQ(sbom["packages"].size(), 1u + pythonLine(c).packages.size());
  bool sawFlask = false;
  for (const auto& p : sbom["packages"]) {
    if (p["name"] != "py3.13-flask") continue;
    sawFlask = true;
    EXPECT_EQ(p["versionInfo"], "3.1.0-r0");
    EXPECT_EQ(p["licenseDeclared"], "BSD-3-Clause");
    EXPECT_EQ(p["externalRefs"][0]["referenceLocator"],
              "pkg:apk/py3.13-flask@3.1.0-r0?arch=x86_64");
  }
  EXPECT_TRUE(sawFlask);
  bool dependsOnPython = false;
  for (const auto& r : sbom["relationships"]) {
    dependsOnPython |= r["spdxElementId"] == "SPDXRef-Package-py3.13-flask" &&
                       r["relationshipType"] == "DEPENDS_ON" &&
                       r["relatedSpdxElement"] == "SPDXRef-Package-python-3.13";
  }
  EXPECT_TRUE(dependsOnPython);
}

TEST(LineImage, ImagesAreWrittenFromRealSignedApkoPackages) {
  TempDir dir;
  fs::create_directories(dir.sub("catalog/repositories/apko"));
  fs::copy(kApko, dir.sub("catalog/repositories/apko/x86_64"), fs::copy_options::recursive);
  imaged::testing::writeFile(
      dir.sub("catalog/starters/base.yaml"),
      "name: base\nlines:\n  - line: \"1\"\n    versions:\n"
      "      - {version: \"1.0\", published: 2026-01-01T00:00:00Z,\n"
      "         packages: [replayout=1.0.0-r0, pretend-baselayout=1.0.0-r0]}\n");
  auto c = *catalog::Catalog::load(dir.sub("catalog"));
  ASSERT_NE(c->findStarter("base"), nullptr);
  const auto& line = c->findStarter("base")->lines[0];
  auto resolved = catalog::resolveLine(
      *c, {line.line, line.production().packages, {*catalog::parseAtom("custom-ca-certificates")}});
  ASSERT_TRUE(resolved.ok()) << resolved.error->message;
  LineImageInput in;
  in.catalog = c;
  in.packages = resolved.packages;
  in.tenant = "acme";
  in.starter = "base";
  in.line = "1";
  in.version = "1.0";
  in.published = line.production().published;
  BlobStore store(dir.sub("blobs"));
  auto written = writeLineImage(in, store);
  ASSERT_TRUE(written.ok()) << written.error().message;
  auto m = nlohmann::json::parse(*store.read(written->manifest.digest));
  auto files = untar(*store.read(m["layers"][0]["digest"]));
  bool certs = false;
  for (const auto& [path, data] : files)
    certs |= path.rfind("usr/local/share/ca-certificates/", 0) == 0;
  EXPECT_TRUE(certs);
  EXPECT_NE(files["lib/apk/db/installed"].find("P:replayout"), std::string::npos);
  EXPECT_NE(files["lib/apk/db/installed"].find("C:Q11/HhSewwwOXgl0r0ffb0O0BRtYc="),
            std::string::npos);
}

TEST(LineImage, ACorruptedPackageFailsTheLineNamingTheFile) {
  TempDir dir;
  fs::copy(kSample, dir.sub("catalog"), fs::copy_options::recursive);
  const std::string victim = dir.sub("catalog/repositories/main/x86_64/py3.13-flask-3.1.0-r0.apk");
  std::string bytes = readText(victim);
  bytes[bytes.size() / 2] ^= 0x01;
  imaged::testing::writeFile(victim, bytes);
  auto c = *catalog::Catalog::load(dir.sub("catalog"));
  BlobStore store(dir.sub("blobs"));
  auto manifest = writeLineImage(pythonLine(c), store);
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.error().code, "E_PACKAGE_CORRUPT");
  EXPECT_NE(manifest.error().message.find("py3.13-flask-3.1.0-r0.apk"), std::string::npos);
}

// Reads the layer digest of a written image's manifest.
std::string layerOf(BlobStore& store, const Descriptor& manifest) {
  auto m = nlohmann::json::parse(*store.read(manifest.digest));
  return m["layers"][0]["digest"];
}

void makeOld(const std::string& path) {
  const timespec old[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old, 0), 0);
}

TEST(LineImage, ALayerIsBuiltOnceForTheSamePackagesAndSharedByOtherImages) {
  TempDir dir;
  fs::copy(kSample, dir.sub("catalog"), fs::copy_options::recursive);
  auto c = *catalog::Catalog::load(dir.sub("catalog"));
  BlobStore store(dir.sub("blobs"));
  auto first = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(first.ok()) << first.error().message;
  // A package file damaged after its layer was built: the cached layer (built from the verified
  // bytes its checksum names) is reused; nothing reads the file again.
  const std::string victim = dir.sub("catalog/repositories/main/x86_64/py3.13-flask-3.1.0-r0.apk");
  std::string bytes = readText(victim);
  bytes[bytes.size() / 2] ^= 0x01;
  imaged::testing::writeFile(victim, bytes);
  LineImageInput other = pythonLine(c);
  other.tenant = "globex";
  other.env.emplace_back("EXTRA", "1");
  auto second = writeLineImage(other, store);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(second->manifest.digest, first->manifest.digest) << "another config";
  EXPECT_EQ(layerOf(store, second->manifest), layerOf(store, first->manifest));
  // Without the cache (another store), the damage is found.
  TempDir elsewhere;
  BlobStore fresh(elsewhere.path());
  auto uncached = writeLineImage(other, fresh);
  ASSERT_FALSE(uncached.ok());
  EXPECT_EQ(uncached.error().code, "E_PACKAGE_CORRUPT");
  // Another world (what was asked for) is another layer: it is built, and the damage found.
  LineImageInput asked = pythonLine(c);
  asked.world.push_back("py3-requests");
  auto third = writeLineImage(asked, store);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, "E_PACKAGE_CORRUPT");
  // A package file that is gone is reported even when its layer is cached.
  fs::remove(victim);
  auto missing = writeLineImage(other, store);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, "E_PACKAGE_MISSING");
}

// With a recheck window (the daemon's second), an image found intact is used again without
// looking; after the window, or without one, a package file that went is reported again.
TEST(LineImage, AnImageCheckedMomentsAgoIsReusedWithoutLookingAgain) {
  TempDir dir;
  fs::copy(kSample, dir.sub("catalog"), fs::copy_options::recursive);
  auto c = *catalog::Catalog::load(dir.sub("catalog"));
  BlobStore store(dir.sub("blobs"));
  store.setRecheckAfter(std::chrono::hours(1));
  auto first = writeLineImage(pythonLine(c), store);  // written: not checked yet
  ASSERT_TRUE(first.ok()) << first.error().message;
  const std::string victim = dir.sub("catalog/repositories/main/x86_64/py3.13-flask-3.1.0-r0.apk");
  fs::remove(victim);
  // A written image was never found intact by a check: this use checks, and finds the loss.
  auto checked = writeLineImage(pythonLine(c), store);
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(checked.error().code, "E_PACKAGE_MISSING");
  // Put back, checked intact once; gone again, it goes unnoticed within the window ...
  fs::copy(kSample + "/repositories/main/x86_64/py3.13-flask-3.1.0-r0.apk", victim);
  auto intact = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(intact.ok()) << intact.error().message;
  EXPECT_EQ(intact->manifest.digest, first->manifest.digest);
  fs::remove(victim);
  auto reused = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(reused.ok()) << reused.error().message;
  EXPECT_EQ(reused->manifest.digest, first->manifest.digest);
  // ... and is found once the window is over.
  store.setRecheckAfter(std::chrono::milliseconds(0));
  auto after = writeLineImage(pythonLine(c), store);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, "E_PACKAGE_MISSING");
}

TEST(LineImage, ACachedLayerWhoseBlobWasCollectedIsBuiltAgain) {
  auto c = *catalog::Catalog::load(kSample);
  TempDir dir;
  BlobStore store(dir.path());
  auto first = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(first.ok());
  const std::string layer = layerOf(store, first->manifest);
  makeOld(store.pathOf(layer));
  ASSERT_TRUE(store.removeIfOlder(layer, std::chrono::seconds(3600)).has_value());
  ASSERT_FALSE(store.has(layer));
  auto again = writeLineImage(pythonLine(c), store);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->manifest.digest, first->manifest.digest);
  EXPECT_TRUE(store.has(layer));
}

TEST(BlobStore, ABlobReusedSinceItWasWrittenIsNotCollected) {
  TempDir dir;
  BlobStore store(dir.path());
  auto blob = store.put("some bytes", "text/plain");
  ASSERT_TRUE(blob.ok());
  EXPECT_FALSE(store.removeIfOlder(blob->digest, std::chrono::seconds(3600)).has_value())
      << "young";
  makeOld(store.pathOf(blob->digest));
  ASSERT_TRUE(store.put("some bytes", "text/plain").ok());  // reused: young again
  EXPECT_FALSE(store.removeIfOlder(blob->digest, std::chrono::seconds(3600)).has_value());
  makeOld(store.pathOf(blob->digest));
  EXPECT_EQ(store.removeIfOlder(blob->digest, std::chrono::seconds(3600)), 10u);
  EXPECT_FALSE(store.has(blob->digest));
  EXPECT_FALSE(store.refresh(blob->digest));
}

}  // namespace
}  // namespace imaged::image
