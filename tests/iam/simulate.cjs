// Evaluates AWS requests against IAM policies offline with @cloud-copilot/iam-simulate (AGPL-3.0, a test-time
// tool installed under .rig/ by the Makefile, never shipped). stdin: a JSON list of simulations
// ({identityPolicies, resourcePolicy?, request}); stdout: a JSON list of {result, allowedBy, errors, explains}.
"use strict";
const path = require("path");
const { createRequire } = require("module");
// argv[2]: the directory npm installed the simulator in (its package.json is there).
const { runSimulation } = createRequire(path.join(path.resolve(process.argv[2]), "package.json"))(
  "@cloud-copilot/iam-simulate",
);

async function evaluate(simulation) {
  const response = await runSimulation(
    { serviceControlPolicies: [], resourceControlPolicies: [], ...simulation },
    {},
  );
  if (response.resultType === "error") {
    return { result: "Error", errors: response.errors };
  }
  // A request on "*" that nothing allows comes back as a "wildcard" answer with no result to analyse.
  const result = response.resultType === "single" ? response.result : response.results[0];
  const identity = result?.analysis?.identityAnalysis;
  const resource = result?.analysis?.resourceAnalysis;
  const explains = [...(identity?.unmatchedStatements || []), ...(identity?.denyStatements || []),
    ...(resource?.denyStatements || [])].map((s) => s.explain);
  return {
    result: response.overallResult,
    allowedBy: (identity?.allowStatements || []).map((s) => s.explain.identifier),
    resourceAllowedBy: (resource?.allowStatements || []).map((s) => s.explain.identifier),
    deniedBy: [...(identity?.denyStatements || []), ...(resource?.denyStatements || [])]
      .map((s) => s.explain.identifier),
    explains,
  };
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const results = [];
  for (const simulation of JSON.parse(input)) results.push(await evaluate(simulation));
  process.stdout.write(JSON.stringify(results));
});
