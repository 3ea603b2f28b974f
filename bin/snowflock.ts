#!/usr/bin/env bun
import { startCli } from "../src/cli/main.ts";

// Exit explicitly: a finished VM may leave idle handles (sockets, timers) behind.
process.exit(await startCli(process.argv.slice(2)));
