/**
 * A stock Linux with `--net` and its clones on one Ethernet segment: the VM's virtio network device
 * is a tap on the family's bridge, each clone gets a tap of its own on the same bridge and a MAC
 * of its own (sf clone binds the driver again in each clone, so Linux reads it). The parent and
 * two clones then reach each other by IP.
 */
import { expect, test } from "bun:test";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";
import { jobLines, linuxAssetsMissing, runLinuxJob } from "../support/linux-guest.ts";
import { within } from "../support/time.ts";

const missing = linuxAssetsMissing();
const BRIDGE = "sftest0";

/**
 * The parent takes 10.77.0.1 and forks 2 clones; clone N takes 10.77.0.(N+1) and reports its MAC.
 * Once both are up the parent pings each, then lets them go; each clone pings the parent and its
 * sibling and exits 0 only if both answered.
 */
const JOB = `ip link set lo up
ip link set eth0 up && ip addr add 10.77.0.1/24 dev eth0
echo "job: parent mac $(cat /sys/class/net/eth0/address)"
id=$(sf clone 2)
if [ "$id" = 0 ]; then
  for n in 1 2; do echo "job: got $(sf recv)"; done
  for c in 2 3; do ping -c 3 -W 10 10.77.0.$c > /dev/null && echo "job: the parent reaches 10.77.0.$c"; done
  for c in 1 2; do sf send $c go; done
  echo "job: join $(sf join)"
  poweroff -f
else
  ip link set eth0 up && ip addr add 10.77.0.$((id + 1))/24 dev eth0
  sf send 0 "up-$id-$(cat /sys/class/net/eth0/address)"
  [ "$(sf recv)" = "0 go" ] || sf exit 1
  ping -c 3 -W 10 10.77.0.1 > /dev/null || sf exit 2
  ping -c 3 -W 10 10.77.0.$((4 - id)) > /dev/null || sf exit 3
  sf exit 0 reached
fi
`;

describeKvm("a stock Linux with --net: parent and clones on the family's bridge", () => {
  if (missing && !KVM_REQUIRED) {
    test.skip(`skipped: ${missing}`, () => {});
    return;
  }

  test(
    "the parent and two clones (sf clone 2) reach each other by IP; each has a MAC of its own",
    async () => {
      const result = await runLinuxJob(JOB, ["--memory", "cow", "--net", BRIDGE]);
      const job = jobLines(result);
      const parentMac = /^job: parent mac ([0-9a-f:]{17})$/.exec(job[0] ?? "")?.[1];
      expect(parentMac, job.join("\n")).toBeDefined();
      const ups = job
        .slice(1, 3)
        .map((l) => /^job: got (\d) up-(\d)-([0-9a-f:]{17})$/.exec(l))
        .sort((a, b) => Number(a?.[1]) - Number(b?.[1]));
      expect(
        ups.map((m) => m && [m[1], m[2]]),
        job.join("\n"),
      ).toEqual([
        ["1", "1"],
        ["2", "2"],
      ]);
      const macs = [parentMac!, ...ups.map((m) => m![3]!)];
      expect(new Set(macs).size).toBe(3);
      for (const mac of macs) expect(Number.parseInt(mac.slice(0, 2), 16) & 0x03).toBe(0x02); // unicast, locally administered
      expect(job.slice(3, 5)).toEqual(["job: the parent reaches 10.77.0.2", "job: the parent reaches 10.77.0.3"]);
      expect(job[5]).toBe("job: join 2 1=0:reached 2=0:reached");
    },
    within(300_000),
  );
});
