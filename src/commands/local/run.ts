// Running a host command to completion, for the local environment's set-up steps.
import { execFile } from 'node:child_process';

export interface RunResult {
  /** The exit code; 1 when it could not run or was killed. */
  code: number;
  stdout: string;
  /** Its stderr, or why it could not run. */
  stderr: string;
  /** stdout then stderr, as a person reading a log would want them. */
  out: string;
}

/** Never rejects: a command that fails or cannot start resolves with its exit code. */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({
        code,
        stdout: String(stdout),
        stderr: String(stderr || (err?.message ?? '')),
        out: `${stdout}${stderr}`,
      });
    });
  });
}
