/*
 * Crash safety and instance faults, against the real daemon: SIGKILL of
 * vtpmd at awkward moments then a restart keeps the active identity, its NV
 * and persistent handles and the finished pool; SIGTERM keeps loaded
 * sessions; an instance that hangs or dies costs the waiting client one
 * TPM_RC_FAILURE and a rotation, never the daemon.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "daemon_util.h"

#define AK "0x81008000"
#define RC_FAILURE 0x101u

/* TPM2_ReadPublic(0x80000000): a transient handle, so never replayed */
static const uint8_t readpublic_transient[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x01, 0x73, 0x80, 0x00, 0x00, 0x00,
};

FIXTURE(crash) {
	struct vd d;
};

FIXTURE_SETUP(crash)
{
	const char *why = vd_unsupported();

	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
}

FIXTURE_TEARDOWN(crash)
{
	char tmpfs[sizeof(self->d.state)];

	if (getenv("VTPMD_TEST_VERBOSE"))
		vd_sh("tail -n 60 '%s'", self->d.log);
	if (self->d.pid > 0)
		(void)vd_stop(&self->d, SIGTERM);
	if (self->d.dir[0])
		EXPECT_TRUE(vd_sanitizer_clean(&self->d));
	snprintf(tmpfs, sizeof(tmpfs), "%s", self->d.state);
	if (self->d.dir[0])
		(void)umount2(tmpfs, MNT_DETACH);	/* the disk-full test's tmpfs, if left */
	vd_cleanup(&self->d);
}

/* pool_size 0 keeps the default (2) that vd_write_conf() writes. */
static void start_sized(struct vd *d, unsigned pool_size, const char *pool, const char *extra)
{
	if (pool || extra)
		ASSERT_EQ(vd_write_conf(d, pool, extra), 0);
	if (pool_size)
		ASSERT_EQ(vd_sh("sed -i 's/^size = 2$/size = %u/' %s", pool_size, d->conf), 0);
	if (vd_start(d) != 0) {
		vd_sh("cat '%s'", d->log);
		ASSERT_TRUE(false);
	}
}

static void start(struct vd *d, const char *pool, const char *extra)
{
	start_sized(d, 0, pool, extra);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Stop the active instance with sig; the waiting command gets want_rc
 * (TPM_RC_FAILURE, or success when the mux could replay it on the fresh
 * instance), and the next one works.
 */
static void fault_case(struct vd *d, int sig, const uint8_t *cmd, size_t len, uint32_t want_rc,
		       long long max_ms)
{
	char before[128];
	char after[128];
	uint8_t rsp[64];
	long long t0;
	ssize_t n;
	pid_t pid;
	int fd;

	start(d, "command_timeout = 1s\n", NULL);
	ASSERT_EQ(vd_getrandom_rc(d), 0u);
	vd_status_active(d, before, sizeof(before));
	pid = vd_active_pid(d);
	ASSERT_GT(pid, 0);
	ASSERT_EQ(kill(pid, sig), 0);

	fd = open(d->tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	t0 = now_ms();
	n = vd_xfer(fd, cmd, len, rsp, sizeof(rsp), 20000);
	TEST_LOG("answer after %lld ms, len %zd", now_ms() - t0, n);
	EXPECT_EQ(vd_rc(rsp, n), want_rc);
	EXPECT_LT(now_ms() - t0, max_ms);
	/* the same open file goes on, on the fresh instance */
	n = vd_xfer(fd, vd_getrandom8, sizeof(vd_getrandom8), rsp, sizeof(rsp), 20000);
	EXPECT_EQ(vd_rc(rsp, n), 0u);
	close(fd);

	vd_status_active(d, after, sizeof(after));
	EXPECT_NE(strcmp(before, after), 0);
	EXPECT_GE(vd_status_num(d, "rotations"), 1);
	EXPECT_EQ(waitpid(d->pid, NULL, WNOHANG), 0);	/* the daemon lives */
	EXPECT_EQ(vd_sh("grep -q 'mux: instance failed inst=%s' %s", before, d->log), 0);
	EXPECT_EQ(vd_sh("grep -q 'reason=instance_failure' %s", d->log), 0);
	if (sig == SIGSTOP)
		(void)kill(pid, SIGCONT);
}

TEST_F_TIMEOUT(crash, hung_instance_fails_one_command_and_rotates, 120)
{
	/* command_timeout is 1 s: the answer comes after it, well before 20 s */
	fault_case(&self->d, SIGSTOP, readpublic_transient, sizeof(readpublic_transient),
		   RC_FAILURE, 5000);
	EXPECT_EQ(vd_status_num(&self->d, "replays"), 0);
	EXPECT_EQ(vd_sh("grep -q 'err=\"Connection timed out\"' %s", self->d.log), 0);
}

TEST_F_TIMEOUT(crash, killed_instance_fails_one_command_and_rotates, 120)
{
	fault_case(&self->d, SIGKILL, readpublic_transient, sizeof(readpublic_transient),
		   RC_FAILURE, 1000);
}

TEST_F_TIMEOUT(crash, killed_instance_replays_a_safe_command, 120)
{
	fault_case(&self->d, SIGKILL, vd_getrandom8, sizeof(vd_getrandom8), 0, 1000);
	EXPECT_EQ(vd_status_num(&self->d, "replays"), 1);
}

/*
 * tpm0 runs a command inside write(2) when nothing else waits, but only
 * briefly: on a hung instance the write returns, the read parks, and a
 * client that is killed goes at once, not after command_timeout.
 */
TEST_F_TIMEOUT(crash, client_of_a_hung_instance_dies_at_once, 120)
{
	long long t0;
	pid_t inst;
	pid_t child;
	int status;

	start(&self->d, "command_timeout = 20s\n", NULL);
	ASSERT_EQ(vd_getrandom_rc(&self->d), 0u);
	inst = vd_active_pid(&self->d);
	ASSERT_GT(inst, 0);
	ASSERT_EQ(kill(inst, SIGSTOP), 0);

	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		uint8_t rsp[64];
		int fd = open(self->d.tpm0, O_RDWR);	/* blocking, as a plain client */

		if (fd < 0 || write(fd, vd_getrandom8, sizeof(vd_getrandom8)) < 0)
			_exit(2);
		(void)read(fd, rsp, sizeof(rsp));	/* parks: the instance is stopped */
		_exit(3);
	}
	usleep(300 * 1000);	/* the write has returned, the read waits */
	EXPECT_EQ(waitpid(child, &status, WNOHANG), 0);
	t0 = now_ms();
	ASSERT_EQ(kill(child, SIGKILL), 0);
	ASSERT_EQ(waitpid(child, &status, 0), child);
	TEST_LOG("client gone %lld ms after SIGKILL", now_ms() - t0);
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_LT(now_ms() - t0, 2000);
	(void)kill(inst, SIGCONT);
	/* the instance answers the orphaned command; later clients are served */
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
	EXPECT_EQ(waitpid(self->d.pid, NULL, WNOHANG), 0);
}

/*
 * An umount from outside takes the device files away: vtpmd stops cleanly
 * (the active instance saved) and exits 1 for its supervisor, and the
 * next start serves the same TPM on the same path.
 */
TEST_F_TIMEOUT(crash, external_umount_stops_with_a_failure, 120)
{
	char before[128];
	char after[128];
	int status = 0;
	int i;

	start(&self->d, "", NULL);
	vd_status_active(&self->d, before, sizeof(before));
	ASSERT_EQ(umount2(self->d.mnt, MNT_DETACH), 0);
	for (i = 0; i < 200 && waitpid(self->d.pid, &status, WNOHANG) != self->d.pid; i++)
		vd_sleep_ms(50);
	ASSERT_LT(i, 200);
	self->d.pid = -1;
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	EXPECT_EQ(vd_sh("grep -q 'vtpmd: the mount went away, stopping path=%s' %s",
			self->d.mnt, self->d.log), 0);
	EXPECT_EQ(vd_sh("grep -q 'saved the volatile state' %s", self->d.log), 0);

	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
}

/* Record what must survive: AK and EK public areas, an NV index, a persistent key. */
static void identity_save(struct vd *d, const char *tag)
{
	ASSERT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; cd %s; "
			"tpm2_readpublic -c " AK " -o ak-%s.pub >/dev/null && "
			"tpm2_readpublic -c 0x81010001 -o ek-%s.pub >/dev/null",
			d->tpm0, d->dir, tag, tag), 0);
}

static void identity_same(struct vd *d)
{
	identity_save(d, "after");
	EXPECT_EQ(vd_sh("cd %s && cmp ak-before.pub ak-after.pub && cmp ek-before.pub ek-after.pub",
			d->dir), 0);
}

TEST_F_TIMEOUT(crash, sigkill_keeps_identity_nv_and_persistent_handles, 240)
{
	char before[128];
	char after[128];

	start(&self->d, "", NULL);
	vd_status_active(&self->d, before, sizeof(before));
	identity_save(&self->d, "before");
	ASSERT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; cd %s; set -e; "
			"tpm2_nvdefine -Q 0x1500016 -C o -s 8 -a 'ownerread|ownerwrite|authread|authwrite'; "
			"echo -n crashsaf > nv.in; tpm2_nvwrite -Q 0x1500016 -C o -i nv.in; "
			"tpm2_createprimary -Q -C o -c prim.ctx; "
			"tpm2_evictcontrol -Q -C o -c prim.ctx 0x81000010; "
			"tpm2_readpublic -c 0x81000010 -o prim-before.pub >/dev/null",
			self->d.tpm0, self->d.dir), 0);

	(void)vd_stop(&self->d, SIGKILL);
	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
	identity_same(&self->d);
	/* TPM2_Startup was done for us: plain commands work at once */
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; cd %s; set -e; "
			"tpm2_nvread -Q 0x1500016 -C o -s 8 -o nv.out; cmp nv.in nv.out; "
			"tpm2_readpublic -c 0x81000010 -o prim-after.pub >/dev/null; "
			"cmp prim-before.pub prim-after.pub",
			self->d.tpm0, self->d.dir), 0);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

TEST_F_TIMEOUT(crash, sigterm_keeps_a_loaded_session_sigkill_does_not, 240)
{
	start(&self->d, "", NULL);
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_startauthsession -S %s/s.ctx",
			self->d.tpm0, self->d.dir), 0);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);
	start(&self->d, NULL, NULL);
	EXPECT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_sessionconfig %s/s.ctx",
			self->d.tpm0, self->d.dir), 0);

	/* a crash loses volatile state, as a TPM reset does */
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_startauthsession -S %s/s2.ctx",
			self->d.tpm0, self->d.dir), 0);
	(void)vd_stop(&self->d, SIGKILL);
	start(&self->d, NULL, NULL);
	EXPECT_NE(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_sessionconfig %s/s2.ctx 2>/dev/null",
			self->d.tpm0, self->d.dir), 0);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
}

/* Instance directories that are complete (not .tmp) into a sorted list file. */
static int list_ready(struct vd *d, const char *out)
{
	return vd_sh("cd %s/instances && for i in *; do case $i in *.tmp) ;; "
		     "*) [ -e $i/activated ] || echo $i;; esac; done | sort > %s/%s",
		     d->state, d->dir, out);
}

TEST_F_TIMEOUT(crash, sigkill_during_manufacture_keeps_finished_drops_half_made, 300)
{
	int i;

	start_sized(&self->d, 8, "workers = 2\n", NULL);
	/* wait for a manufacture in progress, then kill the daemon mid-way */
	for (i = 0; i < 400; i++) {
		if (vd_sh("ls -d %s/instances/*.tmp >/dev/null 2>&1", self->d.state) == 0)
			break;
		vd_sleep_ms(10);
	}
	ASSERT_LT(i, 400);
	(void)vd_stop(&self->d, SIGKILL);
	/*
	 * Its manufacturing processes die with it, not write on as orphans
	 * (under the sanitizers one manufacture takes longer than this).
	 */
	for (i = 0; i < 25; i++) {
		if (vd_sh("pgrep -f '[m]anufacture --dir %s/instances/' >/dev/null",
			  self->d.state) != 0)
			break;
		vd_sleep_ms(20);
	}
	EXPECT_LT(i, 25);
	ASSERT_EQ(list_ready(&self->d, "ready-before"), 0);
	vd_sh("echo ready before: $(wc -l < %s/ready-before); ls %s/instances",
	      self->d.dir, self->d.state);

	ASSERT_EQ(vd_sh("cd %s/instances && ls -d *.tmp > %s/half-made", self->d.state,
			self->d.dir), 0);

	start(&self->d, NULL, NULL);
	/* the half-made ones are gone (refill may be making new ones) */
	EXPECT_EQ(vd_sh("cd %s/instances && for i in $(cat %s/half-made); do "
			"[ -e $i ] && echo left: $i && exit 1; done; exit 0",
			self->d.state, self->d.dir), 0);
	/* every instance that was ready is still there (refill adds more) */
	ASSERT_EQ(list_ready(&self->d, "ready-after"), 0);
	EXPECT_EQ(vd_sh("cd %s && comm -23 ready-before ready-after | grep . && exit 1; exit 0",
			self->d.dir), 0);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
	EXPECT_GE(vd_wait_num(&self->d, "ready", 8), 8);
}

/*
 * SIGKILL at random moments under load and around rotations: after each
 * restart the active identity is one that a commit event announced.
 */
TEST_F_TIMEOUT(crash, sigkill_under_load_and_rotation_keeps_an_announced_identity, 600)
{
	char active[128];
	int round;

	start_sized(&self->d, 3, "", NULL);
	srand((unsigned)getpid());
	for (round = 0; round < 4; round++) {
		unsigned delay = (unsigned)(rand() % 400);

		vd_sh("export TPM2TOOLS_TCTI=device:%s; (for i in $(seq 50); do "
		      "tpm2_getrandom 8 >/dev/null 2>&1; tpm2_readpublic -c " AK " >/dev/null 2>&1; "
		      "done) & echo $! > %s/load.pid", self->d.tpm0, self->d.dir);
		vd_sleep_ms(200);
		kill(self->d.pid, SIGUSR1);
		vd_sleep_ms(delay);
		TEST_LOG("round %d: SIGKILL %u ms after a rotation request", round, delay);
		(void)vd_stop(&self->d, SIGKILL);
		vd_sh("kill $(cat %s/load.pid) 2>/dev/null; wait; true", self->d.dir);
		ASSERT_EQ(vd_sh("cd %s/instances && ls -d *.tmp > %s/half-made 2>/dev/null; true",
				self->d.state, self->d.dir), 0);
		start(&self->d, NULL, NULL);
		ASSERT_EQ(vd_getrandom_rc(&self->d), 0u);
		vd_status_active(&self->d, active, sizeof(active));
		ASSERT_NE(active[0], '\0');
		EXPECT_EQ(vd_sh("for i in $(seq 100); do grep -lq '\"instance\":\"%s\"' "
				"%s/*-commit.json 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
				active, self->d.events), 0);
		/* half-made instances from before the kill are gone */
		EXPECT_EQ(vd_sh("cd %s/instances && for i in $(cat %s/half-made); do "
				"[ -e $i ] && echo left: $i && exit 1; done; exit 0",
				self->d.state, self->d.dir), 0);
	}
}

/*
 * Each crash would count one DA failure at the next TPM2_Startup; five in a
 * row (maxTries is 3) must neither lock the TPM out nor rotate it away.
 */
TEST_F_TIMEOUT(crash, repeated_sigkills_do_not_walk_into_da_lockout, 300)
{
	char first[128];
	char now[128];
	int i;

	start(&self->d, "", NULL);
	vd_status_active(&self->d, first, sizeof(first));
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; cd %s; "
				"tpm2_quote -Q -c " AK " -l sha256:0 -q 1234 -m m -s s -g sha256 && "
				"tpm2_getcap properties-variable | "
				"grep -qx 'TPM2_PT_LOCKOUT_COUNTER: 0x0'", self->d.tpm0, self->d.dir), 0);
		(void)vd_stop(&self->d, SIGKILL);
		start(&self->d, NULL, NULL);
	}
	vd_status_active(&self->d, now, sizeof(now));
	EXPECT_STREQ(first, now);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
	EXPECT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_getcap properties-variable | "
			"grep -qx 'TPM2_PT_LOCKOUT_COUNTER: 0x0'", self->d.tpm0), 0);
}

/* Every instance that is not half-made has its whole state and metadata. */
static int instances_complete(struct vd *d)
{
	return vd_sh("cd %s/instances && for i in *; do case $i in *.tmp) continue;; esac; "
		     "for f in meta $(ls $i); do [ -s $i/$f ] || [ $f = activated ] || "
		     "{ echo incomplete: $i/$f; exit 1; }; done; done; exit 0", d->state);
}

/*
 * A full state file system: refill and the clean stop's save fail with
 * clear errors, the active instance goes on serving, nothing half-written
 * is left behind, and the pool refills once space is back.  A read-only
 * one refuses the start.
 */
TEST_F_TIMEOUT(crash, full_or_read_only_state_dir_gives_clear_errors, 300)
{
	char before[128];
	char after[128];

	ASSERT_EQ(mkdir(self->d.state, 0700), 0);
	ASSERT_EQ(vd_sh("mount -t tmpfs -o size=1m,mode=0700 vtpmd-test %s", self->d.state), 0);
	start(&self->d, "", NULL);
	ASSERT_GE(vd_wait_num(&self->d, "ready", 2), 2);
	vd_status_active(&self->d, before, sizeof(before));
	/* fill it up, then ask for two rotations: refill has no room */
	vd_sh("dd if=/dev/zero of=%s/filler bs=4k 2>/dev/null; df -k %s | tail -1",
	      self->d.state, self->d.state);
	kill(self->d.pid, SIGUSR1);
	EXPECT_EQ(vd_sh("for i in $(seq 100); do grep -q 'err=\"No space left on device\"' %s && "
			"exit 0; sleep 0.1; done; exit 1", self->d.log), 0);
	vd_sh("grep -E 'No space left' %s | cut -c1-160", self->d.log);
	/* a rotation that cannot be recorded is not made: the identity stays */
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);
	EXPECT_EQ(instances_complete(&self->d), 0);

	/* space is back: the same identity resumes and the pool refills */
	ASSERT_EQ(vd_sh("rm -f %s/filler", self->d.state), 0);
	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
	EXPECT_GE(vd_wait_num(&self->d, "ready", 2), 2);
	EXPECT_EQ(instances_complete(&self->d), 0);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);

	ASSERT_EQ(vd_sh("mount -o remount,ro %s", self->d.state), 0);
	EXPECT_EQ(vd_start(&self->d), -ECHILD);
	EXPECT_EQ(vd_sh("grep -q 'cannot open the lock file.*Read-only file system' %s",
			self->d.log), 0);
	vd_sh("umount %s", self->d.state);
}

/* scripts/soak, briefly: its last line, and no failure outside the kill windows. */
TEST_F_TIMEOUT(crash, soak_script_short_run, 600)
{
	ASSERT_EQ(vd_sh("bin=$(dirname $VTPMD_BIN); %s/scripts/soak -r 60 -k 30 -b $(dirname $bin) "
			"-w %s/soak > %s/soak.out 2>&1; rc=$?; tail -n 8 %s/soak.out; exit $rc",
			getenv("VTPMD_SOURCE_ROOT"), self->d.dir, self->d.dir, self->d.dir), 0);
	EXPECT_EQ(vd_sh("tail -n 1 %s/soak.out | grep -qE '^soak: 60 rounds, 0 failed outside "
			"kill windows, [0-9]+ rotations, 1 restarts, peak RSS [0-9]+ KiB$'",
			self->d.dir), 0);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/*
 * The daemon under valgrind's memcheck for a short life: start, tpm2-tools
 * commands, a rotation, SIGTERM.  Any memory error or definite leak makes
 * valgrind exit 99.
 */
TEST_F_TIMEOUT(crash, daemon_under_valgrind_has_no_error_or_definite_leak, 600)
{
	char vlog[400];
	char logopt[420];
	const char *wrap[] = {
		"valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
		"--error-exitcode=99", "--track-fds=no", logopt, NULL,
	};
	int status = -1;
	int i;

#ifdef UNDER_ASAN
	TEST_SKIP("built with AddressSanitizer, which valgrind cannot run");
#endif
	if (vd_sh("command -v valgrind >/dev/null") != 0)
		TEST_SKIP("valgrind is not installed");
	snprintf(vlog, sizeof(vlog), "%s/valgrind.log", self->d.dir);
	snprintf(logopt, sizeof(logopt), "--log-file=%s", vlog);
	ASSERT_EQ(vd_write_conf(&self->d, "", NULL), 0);
	ASSERT_EQ(vd_start_wrapped(&self->d, wrap, 6), 0);
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; tpm2_getrandom 8 >/dev/null && "
			"tpm2_readpublic -c " AK " >/dev/null && tpm2_startauthsession -S %s/s.ctx",
			self->d.tpm0, self->d.dir), 0);
	kill(self->d.pid, SIGUSR1);
	EXPECT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);

	kill(self->d.pid, SIGTERM);
	for (i = 0; i < 1200; i++) {
		if (waitpid(self->d.pid, &status, WNOHANG) == self->d.pid)
			break;
		vd_sleep_ms(50);
	}
	ASSERT_LT(i, 1200);
	self->d.pid = -1;
	vd_sh("grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|All heap blocks' %s", vlog);
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0);
	EXPECT_EQ(vd_sh("grep -q 'ERROR SUMMARY: 0 errors' %s", vlog), 0);
}

TEST_HARNESS_MAIN
