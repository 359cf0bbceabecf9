// Checks rendered Istio and Prometheus Operator objects against the validators compiled from
// current CRDs: @kubernetes-models/istio@3.0.1 (Istio 1.29.2) and
// @kubernetes-models/prometheus-operator@6.0.0, installed by scripts/install-tools.sh under
// <deploy-schemas>/node. These check types, enums, required fields and oneOf rules of today's
// Istio; they let unknown fields pass, which crd_schemas.py's tightened schemas catch.
//
// Usage: node crd-validate.mjs <deploy-schemas dir> <object.json>...   (one object per file)
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [schemasDir, ...files] = process.argv.slice(2);
const nodeModules = path.resolve(schemasDir, "node", "node_modules");

// apiVersion/kind -> module exporting a model class of the same name.
const models = {
  "security.istio.io/v1": "@kubernetes-models/istio/security.istio.io/v1",
  "networking.istio.io/v1": "@kubernetes-models/istio/networking.istio.io/v1",
  "telemetry.istio.io/v1": "@kubernetes-models/istio/telemetry.istio.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

let failed = 0;
for (const file of files) {
  const object = JSON.parse(readFileSync(file, "utf8"));
  const where = `${object.kind}/${object.metadata.name} (${path.basename(file)})`;
  const modulePath = models[object.apiVersion];
  if (!modulePath) {
    console.log(`FAIL  ${where}: no validator for ${object.apiVersion}`);
    failed++;
    continue;
  }
  const module = await import(pathToFileURL(path.join(nodeModules, modulePath, "index.js")).href);
  const Model = module[object.kind];
  if (!Model) {
    console.log(`FAIL  ${where}: no ${object.kind} in ${modulePath}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.log(`FAIL  ${where}: ${error.message}`);
    failed++;
  }
}
console.log(`${files.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
