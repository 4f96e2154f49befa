// Loads a FHIR NPM package with fhir-package-loader (the FSH team's loader, as SUSHI uses it), offline:
// its own disk cache extracts the tarball, then it loads the package from the cache and lists what it found.
// Usage: node fhir_package_loader.js LOADER_DIR CACHE_DIR PACKAGE_TGZ NAME VERSION  (prints JSON)
const fs = require("fs");
const [loaderDir, cacheDir, tarball, name, version] = process.argv.slice(2);
const fpl = require(loaderDir);

const offline = async () => {
  throw new Error("offline: nothing is downloaded");
};

async function main() {
  const logs = [];
  const log = (level, message) => logs.push({ level, message });
  const cache = new fpl.DiskBasedPackageCache(cacheDir, { log });
  await cache.cachePackageTarball(name, version, fs.createReadStream(tarball));
  const registry = { resolveVersion: async (_name, v) => v, download: offline };
  const builds = { downloadCurrentBuild: offline, getCurrentBuildDate: offline };
  const loader = new fpl.BasePackageLoader(await fpl.createSQLJSPackageDB(), cache, registry, builds, { log });
  const status = await loader.loadPackage(name, version);
  const scope = `${name}|${version}`;
  const list = (type) =>
    loader.findResourceInfos("*", { scope, type }).map((r) => ({ resourceType: r.resourceType, id: r.id, url: r.url }));
  const profile = loader.findResourceInfos("*", { scope, type: ["Profile"] }).map((r) => r.url);
  const first = profile.length ? loader.findResourceJSON(profile[0], { scope }) : null;
  console.log(
    JSON.stringify({
      status,
      packageJSON: loader.findPackageJSON(name, version),
      resources: list(undefined),
      profiles: profile,
      valueSets: list(["ValueSet"]).map((r) => r.url),
      firstProfileHasSnapshot: first ? Array.isArray(first.snapshot && first.snapshot.element) : null,
      logs,
    })
  );
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
