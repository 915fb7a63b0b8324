// ops/switch/hast-switch against fakes: hastctl, ps, mount, umount, e2fsck, systemctl and
// logger are stub scripts first on PATH that record every call in calls.log; hastctl keeps
// each resource's role in a state directory and prints status --json the way the real one
// does (pretty-printed, nested statistics). Nothing is mounted and no daemon runs.
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const SWITCH = resolve(import.meta.dir, "../../../ops/switch/hast-switch");
const RUN_TIMEOUT_MS = 20_000;
// Each case runs a few dozen short processes; a loaded 2-core machine needs more than 5 s.
setDefaultTimeout(30_000);

const FAKE_HASTCTL = `#!/bin/sh
# fake hastctl: state in $FAKE/state/<res>.{role,split_brain,copy_incomplete,device_off}; role primary makes the
# device (a symlink to /dev/null, a character device) appear in $HAST_DEVDIR, unless device_off.
echo "hastctl $*" >>"$FAKE/calls.log"
sub=$1; shift
[ "\${1:-}" = -c ] && shift 2
case $sub in
status)
	# FAKE/down holds how many more status calls find hastd not yet listening (hastctl exits 71).
	if [ -s "$FAKE/down" ] && [ "$(cat "$FAKE/down")" -gt 0 ]; then
		echo $(($(cat "$FAKE/down") - 1)) >"$FAKE/down"
		echo "hastctl: cannot connect to hastd: hastd is not running" >&2
		exit 71
	fi
	[ -n "\${FAKE_STATUS_SLEEP:-}" ] && sleep "$FAKE_STATUS_SLEEP"
	[ "$1" = --json ] && shift
	[ $# -eq 0 ] && set -- $(cd "$FAKE/state" && ls *.role | sed 's/\\.role$//')
	echo "["
	sep=""
	for r in "$@"; do
		[ -f "$FAKE/state/$r.role" ] || { echo "hastctl: no resource $r" >&2; exit 69; }
		sb=false; [ -f "$FAKE/state/$r.split_brain" ] && sb=true
		ci=false; [ -f "$FAKE/state/$r.copy_incomplete" ] && ci=true
		device=null; [ "$(cat "$FAKE/state/$r.role")" = primary ] && ! [ -f "$FAKE/state/$r.device_off" ] && device="{ \\"path\\": \\"$HAST_DEVDIR/prov-$r\\", \\"mechanism\\": \\"fake\\" }"
		printf '%s  {\\n    "name": "%s",\\n    "role": "%s",\\n    "provname": "%s",\\n' "$sep" "$r" "$(cat "$FAKE/state/$r.role")" "prov-$r"
		printf '    "statistics": {\\n      "reads": 0,\\n      "local_errors": { "read": 0, "write": 0 }\\n    },\\n'
		printf '    "status": "degraded",\\n    "dirty": 4096,\\n    "device": %s,\\n    "note": "a \\\\"quoted\\\\" {brace}",\\n    "split_brain": %s,\\n    "copy_incomplete": %s\\n  }' "$device" "$sb" "$ci"
		sep=",
"
	done
	printf '\\n]\\n'
	;;
role)
	role=$1; r=$2
	[ -n "\${FAKE_ROLE_SLEEP:-}" ] && [ "$role" = primary ] && sleep "$FAKE_ROLE_SLEEP"
	echo "$role" >"$FAKE/state/$r.role"
	# Leaving secondary stops the secondary worker, and with it the old primary's connection.
	[ "$role" != secondary ] && { grep -v "^hastd: $r (secondary)" "$FAKE/ps" >"$FAKE/ps.new"; mv "$FAKE/ps.new" "$FAKE/ps"; }
	if [ "$role" = primary ] && ! [ -f "$FAKE/state/$r.device_off" ]; then ln -sf /dev/null "$HAST_DEVDIR/prov-$r"; else rm -f "$HAST_DEVDIR/prov-$r"; fi
	;;
esac
`;

const FAKE_MOUNT = `#!/bin/sh
# fake mount: no arguments lists $FAKE/mounts; else records and adds "dev on mnt type t (rw)".
# FAKE_MOUNT_TICKS: it takes that many tenths of a second first, and a TERM does not stop it
# (a journal replay).
if [ $# -eq 0 ]; then cat "$FAKE/mounts"; exit 0; fi
echo "mount $*" >>"$FAKE/calls.log"
if [ -n "\${FAKE_MOUNT_TICKS:-}" ]; then
	trap '' TERM
	i=0; while [ $i -lt "$FAKE_MOUNT_TICKS" ]; do sleep 0.1; i=$((i + 1)); done
fi
eval "dev=\\\${$(($# - 1))} mnt=\\\${$#}"
echo "$dev on $mnt type fake (rw)" >>"$FAKE/mounts"
`;

const FAKE_UMOUNT = `#!/bin/sh
echo "umount $*" >>"$FAKE/calls.log"
[ -n "\${FAKE_UMOUNT_FAIL:-}" ] && exit 32
eval "mnt=\\\${$#}"
awk -v p="$mnt" '$3 != p' "$FAKE/mounts" >"$FAKE/mounts.new" && mv "$FAKE/mounts.new" "$FAKE/mounts"
`;

const FAKE_SYSTEMCTL = `#!/bin/sh
# fake systemctl: services in $FAKE/active/<name> are active.
case $1 in
is-active) [ -f "$FAKE/active/$3" ]; exit ;;
start) touch "$FAKE/active/$2" ;;
stop) rm -f "$FAKE/active/$2" ;;
esac
echo "systemctl $*" >>"$FAKE/calls.log"
`;

/**
 * A fake systemd for the per-resource units: it runs the Exec lines of the real unit files in
 * ops/systemd (hast-switch and hastctl mapped to the script under test and the fake), honouring
 * their Conflicts= (starting one unit stops the other first) and BindsTo= (the target follows the
 * primary unit). Jobs show in list-jobs while they run; start waits for its job unless --no-block.
 * States are files in $FAKE/units.
 */
const FAKE_SYSTEMD = `#!/bin/sh
echo "systemctl $*" >>"$FAKE/calls.log"
u="$FAKE/units"
exec_line() { # key unit-file instance: the command, runnable here
	sed -n "s/^$1=//p" "$UNITS/$2" | sed -e "s/%i/$3/g" -e "s|/usr/local/sbin/hast-switch|sh $SWITCH|" -e "s|/usr/local/sbin/hastctl|hastctl|" -e 's/\\\${HASTD_CONFIG}/x/'
}
run_exec() { # key unit-file instance
	cmd=$(exec_line "$@")
	[ -z "$cmd" ] && return 0
	HAST_SWITCH_UNITS=no eval "$cmd"
}
primary_up() {
	if [ -f "$u/hast-secondary@$1.service.active" ]; then run_exec ExecStop hast-secondary@.service "$1"; rm -f "$u/hast-secondary@$1.service.active"; fi
	if run_exec ExecStart hast-primary@.service "$1"; then touch "$u/hast-primary@$1.service.active" "$u/hast@$1.target.active"; fi
}
secondary_up() {
	if [ -f "$u/hast-primary@$1.service.active" ]; then rm -f "$u/hast@$1.target.active"; run_exec ExecStop hast-primary@.service "$1"; rm -f "$u/hast-primary@$1.service.active"; fi
	if run_exec ExecStart hast-secondary@.service "$1"; then touch "$u/hast-secondary@$1.service.active"; fi
}
case $1 in
is-active)
	eval "unit=\\\${$#}"
	if [ -f "$u/$unit.active" ]; then echo active; exit 0; fi
	echo inactive; exit 3
	;;
list-jobs)
	shift 3
	for unit in "$@"; do [ -f "$u/$unit.job" ] && echo "1 $unit start running"; done
	exit 0
	;;
start)
	shift
	block=yes
	[ "$1" = --no-block ] && { block=no; shift; }
	unit=$1
	touch "$u/$unit.job"
	(
		case $unit in
		hast@*.target) r=\${unit#hast@}; primary_up "\${r%.target}" ;;
		hast-secondary@*.service) r=\${unit#hast-secondary@}; secondary_up "\${r%.service}" ;;
		esac
		rm -f "$u/$unit.job"
	) >>"$FAKE/units.log" 2>&1 &
	[ "$block" = no ] && exit 0
	wait $!
	[ -f "$u/$unit.active" ]
	;;
esac
`;

const recorder = (name: string) => `#!/bin/sh\necho "${name} $*" >>"$FAKE/calls.log"\n`;

interface Result {
  code: number;
  stderr: string;
}

let fake: string;

function write(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

beforeEach(() => {
  fake = mkdtempSync(join(tmpdir(), "hast-switch-"));
  for (const dir of ["bin", "state", "dev", "run", "active", "mnt", "units"]) mkdirSync(join(fake, dir));
  write(join(fake, "bin/hastctl"), FAKE_HASTCTL);
  write(join(fake, "bin/mount"), FAKE_MOUNT);
  write(join(fake, "bin/umount"), FAKE_UMOUNT);
  write(join(fake, "bin/systemctl"), FAKE_SYSTEMCTL);
  // Process titles come from $FAKE/ps; the pid/ppid table (to kill a command's children) is real.
  write(join(fake, "bin/ps"), `#!/bin/sh\ncase "$*" in *pid=*) PATH=/usr/bin:/bin exec ps "$@" ;; esac\ncat "$FAKE/ps"\n`);
  write(join(fake, "bin/e2fsck"), recorder("e2fsck"));
  write(join(fake, "bin/logger"), "#!/bin/sh\nexit 0\n");
  writeFileSync(join(fake, "mounts"), "");
  writeFileSync(join(fake, "ps"), "init\n");
  writeFileSync(join(fake, "calls.log"), "");
  for (const r of ["r0", "r1"]) writeFileSync(join(fake, "state", `${r}.role`), "secondary\n");
});

afterEach(() => {
  rmSync(fake, { recursive: true, force: true });
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: `${join(fake, "bin")}:/usr/bin:/bin`,
    FAKE: fake,
    HAST_SWITCH_CONF: join(fake, "absent.conf"),
    HAST_SWITCH_RUNDIR: join(fake, "run"),
    HAST_DEVDIR: join(fake, "dev"),
    HAST_MOUNTS: `r0:${fake}/mnt/r0:ext4:noatime r1:${fake}/mnt/r1:ext4`,
    HAST_SERVICES: "nfs-server smbd",
    SECONDARY_WAIT_S: "1",
    DEVICE_WAIT_S: "2",
    ...extra,
  };
}

async function hastSwitch(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  const proc = Bun.spawn(["sh", SWITCH, ...args], { env: env(extra), stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), RUN_TIMEOUT_MS);
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stderr };
}

/** Recorded calls, without the status queries (they may come any number of times). */
function calls(): string[] {
  return readFileSync(join(fake, "calls.log"), "utf8").split("\n").filter((l) => l !== "" && !l.startsWith("hastctl status"));
}

function role(r: string): string {
  return readFileSync(join(fake, "state", `${r}.role`), "utf8").trim();
}

const dev = (r: string) => join(fake, "dev", `prov-${r}`);
const mnt = (r: string) => join(fake, "mnt", r);

describe("hast-switch primary", () => {
  test("role primary, then fsck and mount of /dev/hast/<provname>, then the services, in that order", async () => {
    const r = await hastSwitch(["primary", "r0", "r1"]);
    expect(r.stderr).toContain("primary: r0 r1");
    expect(r.code).toBe(0);
    expect(calls()).toEqual([
      "hastctl role primary r0",
      "hastctl role primary r1",
      `e2fsck -p ${dev("r0")}`,
      `mount -t ext4 -o noatime ${dev("r0")} ${mnt("r0")}`,
      `e2fsck -p ${dev("r1")}`,
      `mount -t ext4 ${dev("r1")} ${mnt("r1")}`,
      "systemctl start nfs-server",
      "systemctl start smbd",
    ]);
    expect([role("r0"), role("r1")]).toEqual(["primary", "primary"]);
    expect(existsSync(join(fake, "run", "hast-switch.lock"))).toBe(false);
  });

  // Every promotion of a 'device off' resource used to fail: the device it waited for never came.
  test("a resource hastd serves no device for (device off) is promoted; one with a mount entry is refused", async () => {
    writeFileSync(join(fake, "state", "r1.device_off"), "");
    const r = await hastSwitch(["primary", "r1"], { HAST_MOUNTS: "" });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("r1: no device (device off): nothing to mount");
    expect(calls()).toEqual(["hastctl role primary r1", "systemctl start nfs-server", "systemctl start smbd"]);
    const mounted = await hastSwitch(["primary", "r1"]);
    expect(mounted.code).toBe(1);
    expect(mounted.stderr).toContain(`r1: hastd serves no device for it (device off), but HAST_MOUNTS mounts it on ${mnt("r1")}`);
  });

  // At boot a unit ordered After=hastd.service runs before hastd's control socket listens.
  test("waits, bounded, for a hastd that is still starting", async () => {
    writeFileSync(join(fake, "down"), "3");
    const r = await hastSwitch(["secondary", "r0"], { HAST_SERVICES: "" });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("waiting up to 30 s for hastd to answer");
    writeFileSync(join(fake, "down"), "100");
    const gone = await hastSwitch(["primary", "r0"], { HASTD_WAIT_S: "1" });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("hastd is not running");
    expect(role("r0")).toBe("secondary");
  });

  test("a second call changes nothing and succeeds", async () => {
    expect((await hastSwitch(["primary", "r0"])).code).toBe(0);
    const first = calls().length;
    const again = await hastSwitch(["primary", "r0"]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("already mounted");
    expect(calls().slice(first)).toEqual([]);
  });

  test("is refused when split-brain is reported for any resource, touching nothing", async () => {
    writeFileSync(join(fake, "state", "r1.split_brain"), "");
    const r = await hastSwitch(["primary", "r0", "r1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("r1: split-brain is reported; not promoting anything");
    expect(calls()).toEqual([]);
    expect([role("r0"), role("r1")]).toEqual(["secondary", "secondary"]);
  });

  test("without names switches HAST_RESOURCES, else every resource hastctl reports", async () => {
    expect((await hastSwitch(["primary"], { HAST_RESOURCES: "r1", HAST_SERVICES: "" })).code).toBe(0);
    expect([role("r0"), role("r1")]).toEqual(["secondary", "primary"]);
    expect((await hastSwitch(["primary"], { HAST_SERVICES: "" })).code).toBe(0);
    expect(role("r0")).toBe("primary");
  });

  test("refuses while the old primary is still connected (a secondary worker runs)", async () => {
    writeFileSync(join(fake, "ps"), "hastd: r0 (secondary) --worker\n");
    const r = await hastSwitch(["primary", "r0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("r0: the old primary is still connected after 1 s");
    expect(role("r0")).toBe("secondary");
  });

  test("goes ahead once the secondary worker exits", async () => {
    writeFileSync(join(fake, "ps"), "hastd: r0 (secondary) --worker\n");
    const running = hastSwitch(["primary", "r0"], { SECONDARY_WAIT_S: "10" });
    await Bun.sleep(500);
    expect(role("r0")).toBe("secondary");
    writeFileSync(join(fake, "ps"), "init\n");
    expect((await running).code).toBe(0);
    expect(role("r0")).toBe("primary");
  });

  test("fails when the device does not appear", async () => {
    write(join(fake, "bin/hastctl"), FAKE_HASTCTL.replace('ln -sf /dev/null "$HAST_DEVDIR/prov-$r"', ":"));
    const r = await hastSwitch(["primary", "r0"], { DEVICE_WAIT_S: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${dev("r0")} did not appear within 1 s`);
    expect(calls().some((c) => c.startsWith("mount"))).toBe(false);
  });
});

describe("hast-switch secondary", () => {
  test("stops services (reverse order), unmounts, then role secondary", async () => {
    expect((await hastSwitch(["primary", "r0"])).code).toBe(0);
    const first = calls().length;
    const r = await hastSwitch(["secondary", "r0"]);
    expect(r.code).toBe(0);
    expect(calls().slice(first)).toEqual([
      "systemctl stop smbd",
      "systemctl stop nfs-server",
      `umount ${mnt("r0")}`,
      "hastctl role secondary r0",
    ]);
    expect(role("r0")).toBe("secondary");
    expect(existsSync(dev("r0"))).toBe(false);
    // And again: nothing left to do.
    const before = calls().length;
    expect((await hastSwitch(["secondary", "r0"])).code).toBe(0);
    expect(calls().slice(before)).toEqual([]);
  });

  test("stops a promotion that is still running, then demotes", async () => {
    const promotion = hastSwitch(["primary", "r0"], { FAKE_ROLE_SLEEP: "30" });
    const deadline = Date.now() + 5_000;
    while (!calls().includes("hastctl role primary r0") && Date.now() < deadline) await Bun.sleep(50);
    const started = Date.now();
    const demotion = await hastSwitch(["secondary", "r0"]);
    expect(demotion.stderr).toContain("stopping the promotion still running");
    expect(demotion.code).toBe(0);
    const promoted = await promotion;
    expect(promoted.code).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(calls().some((c) => c.startsWith("mount"))).toBe(false);
    expect(role("r0")).toBe("secondary");
  });
});

describe("hast-switch under failover events", () => {
  test("the latest call wins: a promotion that a demotion superseded while it waited does nothing", async () => {
    // The promotion asks hastd for its resources first (slowly); the demotion, called after it,
    // takes the lock first. Without the rule the promotion would then run, the last word.
    const promotion = hastSwitch(["primary"], { FAKE_STATUS_SLEEP: "1", HAST_SERVICES: "" });
    await Bun.sleep(300);
    const demotion = await hastSwitch(["secondary", "r0", "r1"], { HAST_SERVICES: "" });
    expect(demotion.code).toBe(0);
    const promoted = await promotion;
    expect(promoted.code).toBe(0);
    expect(promoted.stderr).toContain("superseded by a later call");
    expect([role("r0"), role("r1")]).toEqual(["secondary", "secondary"]);
    expect(calls().some((c) => c.startsWith("hastctl role primary") || c.startsWith("mount"))).toBe(false);
  });

  // ucarp's vip.sh passes each instance's own resources: calls for other resources must neither
  // supersede nor stop each other (a promotion once reported success and did nothing).
  test("calls for other resources do not supersede or stop each other", async () => {
    // r1's promotion holds the lock (a slow mount) while r0's and a later one of r1 wait for it.
    const holder = hastSwitch(["primary", "r1"], { FAKE_MOUNT_TICKS: "10", HAST_SERVICES: "" });
    const deadline = Date.now() + 10_000;
    while (!calls().some((c) => c.startsWith("mount")) && Date.now() < deadline) await Bun.sleep(20);
    const r0 = hastSwitch(["primary", "r0"], { HAST_SERVICES: "" });
    await Bun.sleep(200);
    const r1_demotion = hastSwitch(["secondary", "r1"], { HAST_SERVICES: "" });
    const [held, promoted, demoted] = await Promise.all([holder, r0, r1_demotion]);
    expect(held.code).not.toBe(0); // stopped by the later demotion of the same resource
    expect(promoted.code).toBe(0);
    expect(promoted.stderr).not.toContain("superseded");
    expect(demoted.code).toBe(0);
    expect([role("r0"), role("r1")]).toEqual(["primary", "secondary"]);
    // A demotion of r1 does not stop a promotion of r0 that holds the lock.
    expect((await hastSwitch(["secondary", "r0"], { HAST_SERVICES: "" })).code).toBe(0);
    const mounts = calls().filter((c) => c.startsWith("mount")).length;
    const slow = hastSwitch(["primary", "r0"], { FAKE_MOUNT_TICKS: "10", HAST_SERVICES: "" });
    const until = Date.now() + 10_000;
    while (calls().filter((c) => c.startsWith("mount")).length === mounts && Date.now() < until) await Bun.sleep(20);
    const other = await hastSwitch(["secondary", "r1"], { HAST_SERVICES: "" });
    expect(other.code).toBe(0);
    expect(other.stderr).not.toContain("stopping the promotion");
    expect((await slow).code).toBe(0);
    expect(role("r0")).toBe("primary");
  });

  test("of a call's resources, those a later call named are left to it", async () => {
    const promotion = hastSwitch(["primary", "r0", "r1"], { FAKE_STATUS_SLEEP: "1", HAST_SERVICES: "" });
    await Bun.sleep(300);
    const demotion = await hastSwitch(["secondary", "r1"], { HAST_SERVICES: "" });
    expect(demotion.code).toBe(0);
    const promoted = await promotion;
    expect(promoted.code).toBe(0);
    expect(promoted.stderr).toContain("of r0 r1, only r0: the rest superseded by a later call");
    expect([role("r0"), role("r1")]).toEqual(["primary", "secondary"]);
  });

  test("a demotion waits for the mount the promotion it stopped had started, then unmounts it", async () => {
    const promotion = hastSwitch(["primary", "r0"], { FAKE_MOUNT_TICKS: "15", HAST_SERVICES: "" });
    const deadline = Date.now() + 10_000;
    while (!calls().some((c) => c.startsWith("mount")) && Date.now() < deadline) await Bun.sleep(20);
    const demotion = await hastSwitch(["secondary", "r0"], { HAST_SERVICES: "" });
    expect(demotion.code).toBe(0);
    expect((await promotion).code).not.toBe(0);
    expect(role("r0")).toBe("secondary");
    expect(readFileSync(join(fake, "mounts"), "utf8")).toBe(""); // mounted late, unmounted after
    expect(calls()).toContain(`umount ${mnt("r0")}`);
  });

  test("a lock directory left without an owner is removed after a while", async () => {
    mkdirSync(join(fake, "run", "hast-switch.lock"));
    const r = await hastSwitch(["primary", "r0"], { LOCK_WAIT_S: "10", HAST_SERVICES: "" });
    expect(r.stderr).toContain("left without an owner");
    expect(r.code).toBe(0);
    expect(role("r0")).toBe("primary");
  });

  test("a demotion that cannot unmount still demotes, and fails", async () => {
    expect((await hastSwitch(["primary", "r0"], { HAST_SERVICES: "" })).code).toBe(0);
    const r = await hastSwitch(["secondary", "r0"], { FAKE_UMOUNT_FAIL: "1", HAST_SERVICES: "" });
    expect(r.stderr).toContain(`r0: could not unmount ${mnt("r0")}`);
    expect(r.code).toBe(1);
    expect(role("r0")).toBe("secondary");
  });
});

describe("hast-switch through the systemd units (HAST_SWITCH_UNITS=yes)", () => {
  const UNITS = resolve(import.meta.dir, "../../../ops/systemd");
  const units = (extra: Record<string, string> = {}) => ({ HAST_SWITCH_UNITS: "yes", UNITS, SWITCH, HAST_SERVICES: "", LOCK_WAIT_S: "15", ...extra });

  beforeEach(() => write(join(fake, "bin/systemctl"), FAKE_SYSTEMD));

  test("promotes and demotes through the units' own hast-switch runs (no deadlock on the lock)", async () => {
    const up = await hastSwitch(["primary", "r0"], units());
    expect(up.stderr).toContain("primary: r0 (through systemd)");
    expect(up.code).toBe(0);
    expect(role("r0")).toBe("primary");
    expect(readFileSync(join(fake, "mounts"), "utf8")).toContain(mnt("r0"));
    const down = await hastSwitch(["secondary", "r0"], units());
    expect(down.code).toBe(0);
    expect(role("r0")).toBe("secondary");
    expect(readFileSync(join(fake, "mounts"), "utf8")).toBe("");
  });

  test("a promotion through hast@<res>.target still waits for the old primary to let go", async () => {
    // The secondary unit is active (the node came up secondary) and the old primary is still
    // connected. Stopping that unit must not end the connection: the promotion must see it.
    expect((await hastSwitch(["secondary", "r0"], units())).code).toBe(0);
    writeFileSync(join(fake, "ps"), "hastd: r0 (secondary) --worker\n");
    const r = await hastSwitch(["primary", "r0"], units({ SECONDARY_WAIT_S: "1" }));
    expect(r.code).toBe(1);
    expect(readFileSync(join(fake, "units.log"), "utf8")).toContain("the old primary is still connected after 1 s");
    expect(role("r0")).toBe("secondary");
  });
});

test("wait-complete fails at once on split-brain", async () => {
  writeFileSync(join(fake, "state", "r0.split_brain"), "");
  const r = await hastSwitch(["wait-complete", "r0"]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("r0: split-brain is reported");
});

test("wait-complete gives up after COMPLETE_WAIT_S while the resource is degraded", async () => {
  const r = await hastSwitch(["wait-complete", "r0"], { COMPLETE_WAIT_S: "1" });
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("r0: not complete after 1 s (status degraded, dirty 4096)");
});

describe("hast-switch check (a failover manager's health check)", () => {
  test("passes while every copy here is complete, or served here as primary", async () => {
    const r = await hastSwitch(["check"]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    writeFileSync(join(fake, "state", "r0.role"), "primary\n");
    writeFileSync(join(fake, "state", "r0.copy_incomplete"), "");
    expect((await hastSwitch(["check", "r0"])).code).toBe(0);
    expect(calls()).toEqual([]); // read-only: no role change, no mount
  });

  test("fails while a copy here is incomplete and not served here; names the resource", async () => {
    writeFileSync(join(fake, "state", "r1.copy_incomplete"), "");
    const r = await hastSwitch(["check"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("hast-switch: check: r1: this node's copy is incomplete: it must not take over (docs/operations.md)\n");
    expect((await hastSwitch(["check", "r0"])).code).toBe(0);
    expect((await hastSwitch(["check"], { HAST_RESOURCES: "r0" })).code).toBe(0);
    expect(role("r1")).toBe("secondary");
  });

  test("fails while split-brain is reported for a resource not served here; passes where it is served", async () => {
    writeFileSync(join(fake, "state", "r1.split_brain"), "");
    const r = await hastSwitch(["check"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("hast-switch: check: r1: split-brain is reported: this node must not take over (docs/operations.md, 'Split-brain')\n");
    writeFileSync(join(fake, "state", "r1.role"), "primary\n"); // the node serving it keeps the address
    expect((await hastSwitch(["check"])).code).toBe(0);
  });

  test("fails when hastd does not answer, or does not know the resource", async () => {
    const gone = await hastSwitch(["check"], { PATH: `${join(fake, "absent")}:/usr/bin:/bin`, HASTCTL: join(fake, "absent", "hastctl") });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("hastctl status failed: is hastd running?");
    const unknown = await hastSwitch(["check", "nosuch"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("hastctl status failed: is hastd running?");
  });
});

test("usage errors exit 64", async () => {
  expect((await hastSwitch([])).code).toBe(64);
  expect((await hastSwitch(["master"])).code).toBe(64);
});
