// serverless.yml's ${file(./infra/attempt_deadline.js):seconds}: the job definition's timeout minus the stop margin,
// computed here because Serverless variables (and CloudFormation) have no arithmetic. The Batch job reads it as
// $BOOTSTRAPPER_ATTEMPT_DEADLINE_S and stops itself at a safe point (exit 3, retried) before Batch's timeout,
// which would end the job for good. Overriding either param (--param="jobTimeoutSeconds=3600") keeps them in step.
module.exports.seconds = async ({ resolveVariable }) => {
  const timeout = Number(await resolveVariable('param:jobTimeoutSeconds'));
  const margin = Number(await resolveVariable('param:stopMarginSeconds'));
  if (!Number.isInteger(timeout) || !Number.isInteger(margin) || margin < 0 || timeout - margin < 60) {
    throw new Error(`jobTimeoutSeconds (${timeout}) must exceed stopMarginSeconds (${margin}) by 60 s or more`);
  }
  return String(timeout - margin);
};
