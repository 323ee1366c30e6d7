/*
 * The daemon end to end: a real FUSE mount, real libtpms instances, raw
 * command bytes and tpm2-tools against <mount>/tpm0, rotations and their
 * events.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "daemon_util.h"

#define AK "0x81008000"

/* TPM2_GetRandom(8), TPM_ST_NO_SESSIONS */
static const uint8_t getrandom8[] = {
	0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x08,
};

FIXTURE(daemon) {
	struct vd d;
};

FIXTURE_SETUP(daemon)
{
	const char *why = vd_unsupported();

	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
}

FIXTURE_TEARDOWN(daemon)
{
	if (self->d.pid > 0 && getenv("VTPMD_TEST_VERBOSE"))
		vd_sh("tail -n 40 '%s'", self->d.log);
	vd_cleanup(&self->d);
}

static void start(struct vd *d, const char *pool, const char *extra)
{
	ASSERT_EQ(vd_write_conf(d, pool, extra), 0);
	if (vd_start(d) != 0) {
		vd_sh("cat '%s'", d->log);
		ASSERT_TRUE(false);
	}
}

static ssize_t xfer(int fd, const uint8_t *cmd, size_t len, uint8_t *rsp, size_t size)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (write(fd, cmd, len) != (ssize_t)len)
		return -errno;
	if (poll(&p, 1, 10000) != 1)
		return -ETIMEDOUT;
	if (p.revents != POLLIN)
		return -EPROTO;

	return read(fd, rsp, size);
}

TEST_F_TIMEOUT(daemon, raw_getrandom_answers, 60)
{
	uint8_t rsp[64];
	ssize_t n;
	int fd;

	start(&self->d, NULL, NULL);
	fd = open(self->d.tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	n = xfer(fd, getrandom8, sizeof(getrandom8), rsp, sizeof(rsp));
	EXPECT_EQ(n, 20);
	EXPECT_EQ(rsp[6] | rsp[7] | rsp[8] | rsp[9], 0);	/* TPM_RC_SUCCESS */
	EXPECT_EQ(rsp[10] << 8 | rsp[11], 8);
	EXPECT_EQ(read(fd, rsp, sizeof(rsp)), 0);
	close(fd);
}

/*
 * Instance processes log in the daemon's format and at its level (in the
 * background, both go to syslog).
 */
TEST_F_TIMEOUT(daemon, instance_lines_share_the_daemon_log_format, 120)
{
	static const char line[] = "^[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3} info "
				   "worker\\[[0-9a-f]+-[0-9a-f]+\\]: serving (resumed|unstarted) pid=[0-9]+$";

	start(&self->d, NULL, NULL);
	EXPECT_EQ(vd_sh("grep -Eq '%s' '%s'", line, self->d.log), 0);
	ASSERT_EQ(vd_stop(&self->d, SIGTERM), 0);
	ASSERT_EQ(vd_sh("sed -i 's/^log_level = debug$/log_level = warn/' '%s' && : > '%s'",
			self->d.conf, self->d.log), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
	EXPECT_NE(vd_sh("grep -E ' (info|notice|debug) ' '%s'", self->d.log), 0);
}

TEST_F_TIMEOUT(daemon, errno_contract, 60)
{
	uint8_t big[4097] = { 0x80, 0x01, 0x00, 0x00, 0x10, 0x01 };
	uint8_t cmd[sizeof(getrandom8)];
	uint8_t rsp[64];
	int fd;
	int fd2;

	start(&self->d, NULL, NULL);
	fd = open(self->d.tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	fd2 = open(self->d.tpm0, O_RDWR);
	EXPECT_EQ(fd2, -1);
	EXPECT_EQ(errno, EBUSY);

	EXPECT_EQ(write(fd, getrandom8, 5), -1);	/* shorter than a header */
	EXPECT_EQ(errno, EINVAL);
	memcpy(cmd, getrandom8, sizeof(cmd));
	cmd[5] = 0x0e;				/* size field larger than the write */
	EXPECT_EQ(write(fd, cmd, sizeof(cmd)), -1);
	EXPECT_EQ(errno, EINVAL);
	cmd[5] = 0x0a;				/* size field smaller than the write */
	EXPECT_EQ(write(fd, cmd, sizeof(cmd)), -1);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(write(fd, big, sizeof(big)), -1);
	EXPECT_EQ(errno, E2BIG);

	ASSERT_EQ(write(fd, getrandom8, sizeof(getrandom8)), (ssize_t)sizeof(getrandom8));
	EXPECT_EQ(write(fd, getrandom8, sizeof(getrandom8)), -1);	/* response unread */
	EXPECT_EQ(errno, EBUSY);
	/* a blocking read waits for the response; a short buffer gets it in parts */
	EXPECT_EQ(read(fd, rsp, 6), 6);
	EXPECT_EQ(read(fd, rsp + 6, sizeof(rsp) - 6), 14);
	EXPECT_EQ(read(fd, rsp, sizeof(rsp)), 0);
	close(fd);

	/* tpm0 can be opened again once closed */
	fd = open(self->d.tpm0, O_RDWR);
	EXPECT_GE(fd, 0);
	close(fd);
}

TEST_F_TIMEOUT(daemon, tpm2_tools_see_the_manufactured_tpm, 120)
{
	start(&self->d, NULL, NULL);
	setenv("TPM2TOOLS_TCTI", "device:", 1);
	ASSERT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; "
			"tpm2_getrandom --hex 16 && echo && "
			"tpm2_readpublic -c 0x81010001 | grep -q 'rsa' && "
			"tpm2_readpublic -c 0x81010002 | grep -q 'ecc' && "
			"tpm2_readpublic -c " AK " | grep -q 'ecc' && "
			"tpm2_getekcertificate -o %s/rsa.der -o %s/ecc.der && "
			"openssl x509 -inform der -in %s/rsa.der -noout -text | grep -q 2.23.133.8.1 && "
			"openssl verify -CAfile %s/ca/ca.pem <(openssl x509 -inform der -in %s/ecc.der) && "
			"tpm2_pcrread sha1:0+sha256:0 | grep -q sha1",
			self->d.tpm0, self->d.dir, self->d.dir, self->d.dir, self->d.state,
			self->d.dir), 0);
	/* the platform hierarchy is locked */
	EXPECT_NE(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_changeauth -c p newpass", self->d.tpm0), 0);
}

TEST_F_TIMEOUT(daemon, first_activation_is_an_event, 60)
{
	char st[8192];
	char path[400];

	start(&self->d, NULL, NULL);
	EXPECT_EQ(vd_count_events(&self->d, "-commit.json"), 1);
	EXPECT_EQ(vd_count_events(&self->d, "-prepare.json"), 1);
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); "
			"assert e[\"event\"]==\"rotation\" and e[\"old\"] is None and e[\"reason\"]==\"start\"; "
			"assert e[\"new\"][\"ak_pem\"].startswith(\"-----BEGIN PUBLIC KEY-----\")' "
			"\"$(ls %s/*-commit.json)\"", self->d.events), 0);
	snprintf(path, sizeof(path), "%s/status", self->d.mnt);
	ASSERT_GT(vd_read(path, st, sizeof(st)), 0);
	EXPECT_NE_NULL(strstr(st, "\"ek_name\""));
	EXPECT_NE_NULL(strstr(st, "\"ak_name\""));
}

TEST_F_TIMEOUT(daemon, sigusr1_rotates_to_a_new_identity, 120)
{
	char before[80];
	char after[80];

	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, before, sizeof(before));
	ASSERT_NE(before[0], 0);
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_readpublic -c 0x81010001 -o %s/ek1.pub >/dev/null",
			self->d.tpm0, self->d.dir), 0);
	kill(self->d.pid, SIGUSR1);
	EXPECT_EQ(vd_wait_num(&self->d, "rotations", 1), 1);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_NE(strcmp(before, after), 0);
	/* a new EK, and the event that announced it */
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_readpublic -c 0x81010001 -o %s/ek2.pub >/dev/null",
			self->d.tpm0, self->d.dir), 0);
	EXPECT_NE(vd_sh("cmp -s %s/ek1.pub %s/ek2.pub", self->d.dir, self->d.dir), 0);
	EXPECT_EQ(vd_sh("grep -l '\"reason\":\"operator\"' %s/*-commit.json", self->d.events), 0);
	EXPECT_EQ(vd_sh("grep -q 'rotate: swapped.*pause_us=' %s", self->d.log), 0);
	/* the pool refills to its size */
	EXPECT_EQ(vd_wait_num(&self->d, "ready", 2), 2);
}

/* The issue's own bar: 300 rounds, pool of 2, watermark 8: all verify, >= 3 rotations. */
TEST_F_TIMEOUT(daemon, leaking_agent_rotates_and_verifies, 900)
{
	int r;

	start(&self->d, NULL, "[rotate]\nsession_watermark = 8\n");
	r = vd_sh("%s/scripts/attest-loop -q -T device:%s -r 300 -a " AK " -e %s",
		  getenv("VTPMD_SOURCE_ROOT"), self->d.tpm0, self->d.events);
	EXPECT_EQ(r, 0);
	EXPECT_GE(vd_status_num(&self->d, "rotations"), 3);
	EXPECT_EQ(vd_status_num(&self->d, "replays"), 0);
	/* every rotation logged its pause, and the median is under 1 ms */
	EXPECT_EQ(vd_sh("sed -n 's/.*rotate: swapped.*pause_us=\\([0-9.]*\\).*/\\1/p' %s | sort -n |"
			" awk '{a[NR]=$1} END {print \"pauses:\", NR, \"median_us:\", a[int((NR+1)/2)];"
			" exit !(NR >= 3 && a[int((NR+1)/2)] < 1000)}'", self->d.log), 0);
}

/* The same agent against plain swtpm wears it out: the problem vtpmd exists for. */
TEST_TIMEOUT(leaking_agent_wears_out_plain_swtpm, 300)
{
	char dir[] = "/tmp/vtpmd-swtpm.XXXXXX";
	int r;

	if (system("command -v swtpm >/dev/null") != 0)
		TEST_SKIP("swtpm is not installed");
	ASSERT_NE_NULL(mkdtemp(dir));
	r = vd_sh("set -e; port=$((20000 + RANDOM %% 20000)); "
		  "swtpm socket --tpm2 --tpmstate dir=%s --server type=tcp,port=$port,bindaddr=127.0.0.1 "
		  "--ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear & "
		  "pid=$!; trap 'kill $pid' EXIT; export TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$port; "
		  "for i in $(seq 100); do tpm2_getrandom 1 >/dev/null 2>&1 && break; sleep 0.05; done; "
		  "tpm2_createprimary -Q -C e -G ecc256:ecdsa-sha256:null "
		  "-a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign' -c %s/ak.ctx; "
		  "tpm2_evictcontrol -Q -C o -c %s/ak.ctx " AK "; "
		  "tpm2_readpublic -Q -c " AK " -f pem -o %s/ak.pem; "
		  "! %s/scripts/attest-loop -q -p 0 -T $TPM2TOOLS_TCTI -r 80 -a " AK " -k %s/ak.pem "
		  "2>%s/agent.err >%s/agent.out; cat %s/agent.out; grep -m1 '^round' %s/agent.err; "
		  "grep -q 'rounds, 6[0-9] verified' %s/agent.out",
		  dir, dir, dir, dir, getenv("VTPMD_SOURCE_ROOT"), dir, dir, dir, dir, dir, dir);
	EXPECT_EQ(r, 0);
	vd_sh("rm -rf %s", dir);
}

TEST_F_TIMEOUT(daemon, exhaustion_swaps_and_replays, 300)
{
	int r;

	/* watermark off: the 65th session hits TPM_RC_SESSION_HANDLES */
	start(&self->d, NULL, "[rotate]\nsession_watermark = 0\n");
	r = vd_sh("export TPM2TOOLS_TCTI=device:%s; for i in $(seq 1 70); do "
		  "tpm2_startauthsession -S %s/s$i.ctx || exit 1; done",
		  self->d.tpm0, self->d.dir);
	EXPECT_EQ(r, 0);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 1);
	EXPECT_GE(vd_status_num(&self->d, "replays"), 1);
	EXPECT_EQ(vd_sh("grep -q 'rotate: swapped.*reason=exhaustion' %s", self->d.log), 0);
}

TEST_F_TIMEOUT(daemon, max_commands_rotates, 120)
{
	start(&self->d, NULL, "[rotate]\nmax_commands = 20\n");
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; for i in $(seq 1 15); do "
			"tpm2_getrandom 4 >/dev/null || exit 1; done", self->d.tpm0), 0);
	EXPECT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
}

TEST_F_TIMEOUT(daemon, sighup_resizes_the_pool, 180)
{
	FILE *f;

	start(&self->d, NULL, NULL);
	EXPECT_EQ(vd_wait_num(&self->d, "ready", 2), 2);
	f = fopen(self->d.conf, "w");
	ASSERT_NE_NULL(f);
	fprintf(f, "[vtpmd]\nstate_dir = %s\nmountpoint = %s\n[pool]\nsize = 4\n",
		self->d.state, self->d.mnt);
	fclose(f);
	kill(self->d.pid, SIGHUP);
	EXPECT_EQ(vd_wait_num(&self->d, "size", 4), 4);
	EXPECT_EQ(vd_wait_num(&self->d, "ready", 4), 4);
	/* a broken config is refused and the running one kept */
	f = fopen(self->d.conf, "w");
	ASSERT_NE_NULL(f);
	fprintf(f, "[vtpmd]\nstate_dir = %s\nbogus = 1\n", self->d.state);
	fclose(f);
	kill(self->d.pid, SIGHUP);
	vd_sleep_ms(300);
	EXPECT_EQ(vd_status_num(&self->d, "size"), 4);
	EXPECT_EQ(vd_sh("grep -q 'reload failed' %s", self->d.log), 0);
}

TEST_F_TIMEOUT(daemon, restart_resumes_the_active_instance, 120)
{
	char before[80];
	char after[80];

	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, before, sizeof(before));
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_readpublic -c " AK " -o %s/ak1.pub >/dev/null",
			self->d.tpm0, self->d.dir), 0);
	ASSERT_EQ(vd_stop(&self->d, SIGTERM), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
	ASSERT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_readpublic -c " AK " -o %s/ak2.pub >/dev/null",
			self->d.tpm0, self->d.dir), 0);
	EXPECT_EQ(vd_sh("cmp %s/ak1.pub %s/ak2.pub", self->d.dir, self->d.dir), 0);
	/* and the platform hierarchy is locked again after the TPM reset */
	EXPECT_NE(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_changeauth -c p newpass", self->d.tpm0), 0);
}

TEST_F_TIMEOUT(daemon, second_daemon_on_the_state_dir_refuses, 60)
{
	struct vd other;

	start(&self->d, NULL, NULL);
	other = self->d;
	snprintf(other.mnt, sizeof(other.mnt), "%s/mnt2", self->d.dir);
	snprintf(other.log, sizeof(other.log), "%s/vtpmd2.log", self->d.dir);
	EXPECT_NE(vd_sh("mkdir -p %s && %s -c %s -f 2>%s", other.mnt, getenv("VTPMD_BIN"),
			self->d.conf, other.log), 0);
	EXPECT_EQ(vd_sh("grep -q 'another vtpmd is running' %s", other.log), 0);
}

TEST_F_TIMEOUT(daemon, tpmrm0_flushes_what_a_client_leaves, 60)
{
	start(&self->d, NULL, NULL);
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s/tpmrm0; "
			"tpm2_createprimary -C o -c %s/p.ctx >/dev/null && "
			"test \"$(tpm2_getcap handles-transient)\" = ''", self->d.mnt, self->d.dir), 0);
	/* and the instance behind it holds nothing the tools left */
	EXPECT_EQ(vd_sh("for i in $(seq 50); do test -z \"$(TPM2TOOLS_TCTI=device:%s "
			"tpm2_getcap handles-transient)\" && exit 0; sleep 0.05; done; exit 1",
			self->d.tpm0), 0);
}

/* Start-up refuses a mountpoint it cannot serve, before anything else happens. */
TEST_F_TIMEOUT(daemon, refuses_a_bad_or_busy_mountpoint, 120)
{
	const char *bin = getenv("VTPMD_BIN");

	ASSERT_EQ(vd_write_conf(&self->d, NULL, NULL), 0);
	/* a file, not a directory */
	EXPECT_EQ(vd_sh("cd %s && sed 's|^mountpoint = .*|mountpoint = %s/file|' vtpmd.conf > f.conf && "
			"touch file && ! %s -f -c f.conf 2>f.err && grep -q 'not a directory' f.err && "
			"test ! -e state/instances", self->d.dir, self->d.dir, bin), 0);
	/* missing */
	EXPECT_EQ(vd_sh("cd %s && sed 's|^mountpoint = .*|mountpoint = %s/nope|' vtpmd.conf > m.conf && "
			"! %s -f -c m.conf 2>m.err && grep -q 'mountpoint unusable.*No such file' m.err",
			self->d.dir, self->d.dir, bin), 0);
	/* in the background the caller waits for the mount and gets 0 */
	ASSERT_EQ(vd_sh("%s -c %s", bin, self->d.conf), 0);
	EXPECT_TRUE(vd_mounted(&self->d));
	/* it has no stderr now: its instances log to syslog, at its level (debug) */
	EXPECT_EQ(vd_sh("pgrep -f '[v]tpmd-instance serve --dir %s/state/.* --log syslog --log-level 7'",
			self->d.dir), 0);
	/* a second daemon (other state) on the same mountpoint refuses, exit 1 */
	EXPECT_EQ(vd_sh("cd %s && sed 's|^state_dir = .*|state_dir = %s/state2|' vtpmd.conf > s.conf && "
			"! %s -c s.conf 2>s.err && grep -q 'already mounted' s.err",
			self->d.dir, self->d.dir, bin), 0);
	/* stop the background daemon by the pid that holds our state dir's lock */
	EXPECT_EQ(vd_sh("pid=$(fuser %s/state/lock 2>/dev/null | tr -d ' '); test -n \"$pid\" && "
			"kill $pid && for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; "
			"sleep 0.1; done; exit 1", self->d.dir), 0);
	EXPECT_FALSE(vd_mounted(&self->d));
}

/* A dead mount left by a killed daemon is detached at the next start. */
TEST_F_TIMEOUT(daemon, restart_after_sigkill_detaches_the_dead_mount, 120)
{
	char before[80];
	char after[80];

	start(&self->d, NULL, NULL);
	vd_status_active(&self->d, before, sizeof(before));
	kill(self->d.pid, SIGKILL);
	waitpid(self->d.pid, NULL, 0);
	self->d.pid = -1;
	ASSERT_EQ(vd_start(&self->d), 0);
	EXPECT_EQ(vd_sh("grep -q 'detached a dead mount' %s", self->d.log), 0);
	vd_status_active(&self->d, after, sizeof(after));
	EXPECT_STREQ(before, after);
}

/*
 * Rotations while a client sends commands back to back: every command is
 * answered with success, no instance fails, and each rotation's event
 * names the instance it brought in.
 */
TEST_F_TIMEOUT(daemon, rotations_under_load_lose_no_command, 180)
{
	uint8_t rsp[64];
	int status = 0;
	pid_t child;
	long long want;
	int i;

	start(&self->d, NULL, NULL);
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		int fd = open(self->d.tpm0, O_RDWR);
		int bad = 0;
		int n;

		for (n = 0; n < 20000 && fd >= 0; n++)
			if (xfer(fd, getrandom8, sizeof(getrandom8), rsp, sizeof(rsp)) != 20 ||
			    (rsp[6] | rsp[7] | rsp[8] | rsp[9]) != 0)
				bad++;
		_exit(fd < 0 ? 255 : bad > 254 ? 254 : bad);
	}
	for (i = 1; i <= 5; i++) {
		kill(self->d.pid, SIGUSR1);
		want = vd_wait_num(&self->d, "rotations", i);
		EXPECT_EQ(want, i);
		EXPECT_GE(vd_wait_num(&self->d, "ready", 2), 2);
	}
	ASSERT_EQ(waitpid(child, &status, 0), child);
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0);
	EXPECT_NE(vd_sh("grep -E 'instance failed|cannot drop' %s", self->d.log), 0);
	/* six events (start + 5), six different new instances */
	EXPECT_EQ(vd_sh("grep -ho '\"new\":{\"instance\":\"[^\"]*\"' %s/*-commit.json |"
			" sort -u | wc -l | grep -qx 6", self->d.events), 0);
}

/* Failed authorizations approach DA lockout: rotate before the TPM locks out. */
TEST_F_TIMEOUT(daemon, lockout_margin_rotates_before_lockout, 120)
{
	start(&self->d, NULL, "[rotate]\nlockout_margin = 1\n");
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; for i in 1 2; do "
			"! tpm2_quote -Q -c " AK " -p wrong -l sha256:0 -q 00 -m %s/m -s %s/s 2>/dev/null "
			"|| exit 1; done", self->d.tpm0, self->d.dir, self->d.dir), 0);
	EXPECT_EQ(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_EQ(vd_sh("grep -q 'reason=lockout_watermark' %s", self->d.log), 0);
	/* the fresh instance has no failures: quoting with the right (empty) auth works */
	EXPECT_EQ(vd_sh("TPM2TOOLS_TCTI=device:%s tpm2_quote -Q -c " AK " -l sha256:0 -q 00 "
			"-m %s/m -s %s/s", self->d.tpm0, self->d.dir, self->d.dir), 0);
}

/* A margin as large as the TPM's max_auth_fail does not rotate while nothing failed. */
TEST_F_TIMEOUT(daemon, lockout_margin_needs_a_failure, 60)
{
	start(&self->d, NULL, "[rotate]\nlockout_margin = 3\n");
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; for i in 1 2 3 4 5; do "
			"tpm2_startauthsession -S %s/s$i.ctx || exit 1; done", self->d.tpm0,
			self->d.dir), 0);
	vd_sleep_ms(300);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

/* Every configuration example in the README parses: no syntax error, no unknown key. */
TEST(readme_config_examples_parse)
{
	const char *src = getenv("VTPMD_SOURCE_ROOT");
	const char *bin = getenv("VTPMD_BIN");

	if (!src || !bin)
		TEST_SKIP("VTPMD_SOURCE_ROOT or VTPMD_BIN not set (run through meson)");
	EXPECT_EQ(vd_sh("python3 %s/tests/helpers/readme_conf_check.py %s/README.md %s",
			src, src, bin), 0);
}

TEST(check_mode_rejects_a_broken_config)
{
	char dir[] = "/tmp/vtpmd-conf.XXXXXX";
	const char *bin = getenv("VTPMD_BIN");

	if (!bin)
		TEST_SKIP("VTPMD_BIN not set (run through meson)");
	ASSERT_NE_NULL(mkdtemp(dir));
	/* state_dir and mountpoint of our own: -n also checks an existing state_dir */
	EXPECT_EQ(vd_sh("cd %s && printf '[vtpmd]\\nstate_dir = %s/s\\nmountpoint = %s/m\\n' > head", dir,
			dir, dir), 0);
	EXPECT_EQ(vd_sh("cd %s && { cat head; printf '[pool]\\nsize = 0\\n'; } > bad.conf; "
			"%s -n -c %s/bad.conf 2>err; test $? = 1 && grep -q '^%s/bad.conf:5: ' err",
			dir, bin, dir, dir), 0);
	EXPECT_EQ(vd_sh("cd %s && { cat head; printf '[hook.h]\\nexec = /nonexistent/hook\\n'; } > h.conf; "
			"%s -n -c %s/h.conf 2>err; test $? = 1 && "
			"grep -qx '%s/h.conf:5: exec ./nonexistent/hook.: No such file or directory' err",
			dir, bin, dir, dir), 0);
	EXPECT_EQ(vd_sh("cd %s && cp head ok.conf && %s -n -c %s/ok.conf | grep -q '^size = 2'",
			dir, bin, dir), 0);
	vd_sh("rm -rf %s", dir);
}

TEST_HARNESS_MAIN
