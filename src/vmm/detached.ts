/**
 * Starting a snowflock process that outlives the command which started it (a VMM, a test host's
 * agent): in its own session, its output on a file descriptor that is handed over and closed
 * here, not waited for; what it exited with (if it has) can be asked while it starts.
 */
import { type ChildProcess, spawn, type StdioOptions } from "node:child_process";
import { closeSync } from "node:fs";

export interface DetachedChild {
  child: ChildProcess;
  /** Its exit status once it has exited (1 when killed by a signal), else null. */
  exitStatus(): number | null;
}

/** `outputFd` is the child's stderr (and stdout, with `stdoutToo`); it is closed here once handed over. */
export function spawnDetached(
  command: string[],
  options: { outputFd: number; stdoutToo?: boolean; pipeOnFd3?: boolean; env: NodeJS.ProcessEnv },
): DetachedChild {
  const stdio: StdioOptions = [
    "ignore",
    options.stdoutToo ? options.outputFd : "ignore",
    options.outputFd,
    ...(options.pipeOnFd3 ? (["pipe"] as const) : []),
  ];
  const child = spawn(command[0]!, command.slice(1), { detached: true, stdio, env: options.env });
  closeSync(options.outputFd);
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));
  child.unref();
  return { child, exitStatus: () => exited };
}
