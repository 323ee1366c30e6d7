/*
 * Who may reach what: the device files' owner, group and mode, FUSE's
 * default_permissions and allow_other as configured, a private state
 * directory and private key files (vtpmd refuses to start otherwise), a
 * clear error for a configured CA that is missing, and hooks that see an
 * empty environment but for the documented variables.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_util.h"
#include "hook.h"

#define NOBODY 65534

FIXTURE(access) {
	struct vd d;
};

FIXTURE_SETUP(access)
{
	const char *why = vd_unsupported();

	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
}

FIXTURE_TEARDOWN(access)
{
	if (getenv("VTPMD_TEST_VERBOSE"))
		vd_sh("tail -n 40 '%s'", self->d.log);
	if (self->d.pid > 0)
		(void)vd_stop(&self->d, SIGTERM);
	if (self->d.dir[0])
		EXPECT_TRUE(vd_sanitizer_clean(&self->d));
	vd_cleanup(&self->d);
}

static void start(struct vd *d, const char *extra_vtpmd)
{
	ASSERT_EQ(vd_write_conf(d, NULL, NULL), 0);
	if (extra_vtpmd)
		ASSERT_EQ(vd_sh("sed -i 's|^log_level = debug$|log_level = debug\\n%s|' %s",
				extra_vtpmd, d->conf), 0);
	if (vd_start(d) != 0) {
		vd_sh("cat '%s'", d->log);
		ASSERT_TRUE(false);
	}
}

/*
 * Open path read-write as uid/gid with at most one supplementary group
 * (extra, or none when 0) in a child; returns 0 or the errno it got.
 */
static int open_as(const char *path, uid_t uid, gid_t gid, gid_t extra)
{
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd;

		if (setgroups(extra ? 1 : 0, &extra) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(200);
		fd = open(path, O_RDWR | O_NONBLOCK);
		_exit(fd < 0 ? errno : 0);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;

	return WEXITSTATUS(status);
}

static gid_t tss_gid(void)
{
	struct group *g = getgrnam("tss");

	return g ? g->gr_gid : 0;
}

TEST_F_TIMEOUT(access, default_mount_is_root_tss_0660_and_private, 120)
{
	struct stat st;

	if (!tss_gid())
		TEST_SKIP("no tss group");
	ASSERT_EQ(chmod(self->d.dir, 0711), 0);	/* the mount itself must refuse */
	start(&self->d, NULL);
	ASSERT_EQ(stat(self->d.tpm0, &st), 0);
	EXPECT_EQ(st.st_uid, 0u);
	EXPECT_EQ(st.st_gid, tss_gid());
	EXPECT_EQ(st.st_mode & 07777, 0660u);
	/* without allow_other, nobody else reaches the mount at all */
	EXPECT_EQ(open_as(self->d.tpm0, NOBODY, NOBODY, 0), EACCES);
	EXPECT_EQ(open_as(self->d.tpm0, NOBODY, NOBODY, tss_gid()), EACCES);
	EXPECT_EQ(open_as(self->d.tpm0, 0, 0, 0), 0);
	EXPECT_EQ(vd_sh("grep -q 'default_permissions' /proc/mounts && "
			"grep ' %s ' /proc/mounts | grep -vq allow_other", self->d.mnt), 0);
}

TEST_F_TIMEOUT(access, allow_other_lets_the_group_in_and_no_one_else, 120)
{
	if (!tss_gid())
		TEST_SKIP("no tss group");
	ASSERT_EQ(chmod(self->d.dir, 0711), 0);	/* let nobody reach the mount point */
	start(&self->d, "allow_other = yes");
	EXPECT_EQ(vd_sh("grep ' %s ' /proc/mounts | grep -q allow_other", self->d.mnt), 0);
	/* default_permissions: the file's group and mode decide */
	EXPECT_EQ(open_as(self->d.tpm0, NOBODY, NOBODY, 0), EACCES);
	EXPECT_EQ(open_as(self->d.tpm0, NOBODY, NOBODY, tss_gid()), 0);
}

TEST_F_TIMEOUT(access, device_owner_group_and_mode_come_from_the_config, 120)
{
	struct stat st;

	ASSERT_EQ(chmod(self->d.dir, 0711), 0);
	start(&self->d, "allow_other = yes\\ndevice_owner = nobody\\ndevice_group = nogroup\\n"
			"device_mode = 0600");
	ASSERT_EQ(stat(self->d.tpm0, &st), 0);
	EXPECT_EQ(st.st_uid, (uid_t)NOBODY);
	EXPECT_EQ(st.st_gid, (gid_t)NOBODY);
	EXPECT_EQ(st.st_mode & 07777, 0600u);
	EXPECT_EQ(open_as(self->d.tpm0, NOBODY, NOBODY, 0), 0);
	EXPECT_EQ(open_as(self->d.tpm0, 1, NOBODY, 0), EACCES);
}

/* Start must fail, with want in the log. */
static void refuses(struct vd *d, const char *want)
{
	EXPECT_EQ(vd_start(d), -ECHILD);
	EXPECT_EQ(vd_sh("grep -q -- '%s' %s", want, d->log), 0);
}

/*
 * vtpmd -n must refuse the same, at the line of the key, with want (a basic
 * regular expression without single quotes) in its output.
 */
static void check_refuses(struct vd *d, const char *want)
{
	EXPECT_EQ(vd_sh("out=$('%s' -n -c '%s' 2>&1); rc=$?; echo \"$out\"; "
			"[ $rc -eq 1 ] && echo \"$out\" | grep -q -- '^%s:[1-9][0-9]*: %s'",
			getenv("VTPMD_BIN"), d->conf, d->conf, want), 0);
}

TEST_F_TIMEOUT(access, loose_state_dir_or_key_file_refuses_the_start, 180)
{
	char key[400];
	struct stat st;

	start(&self->d, NULL);
	snprintf(key, sizeof(key), "%s/ca/ca.key", self->d.state);
	ASSERT_EQ(stat(self->d.state, &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0700u);
	ASSERT_EQ(stat(key, &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0600u);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);

	ASSERT_EQ(chmod(self->d.state, 0750), 0);
	refuses(&self->d, "state directory is readable by others, refusing to start");
	check_refuses(&self->d, "state_dir .* is open to others (mode 0750, want 0700)");
	ASSERT_EQ(chmod(self->d.state, 0700), 0);
	ASSERT_EQ(chmod(key, 0640), 0);
	refuses(&self->d, "key file is open to others, refusing to start path=.*ca.key mode=0640");
	ASSERT_EQ(chmod(key, 0600), 0);
	/* nothing was lost on the way */
	start(&self->d, NULL);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
}

TEST_F_TIMEOUT(access, configured_ca_missing_or_loose_refuses_the_start, 120)
{
	ASSERT_EQ(vd_write_conf(&self->d, "ca_cert = /nonexistent/ca.pem\n"
				"ca_key = /nonexistent/ca.key\n", NULL), 0);
	refuses(&self->d, "cannot read the configured CA certificate path=/nonexistent/ca.pem");
	check_refuses(&self->d, "ca_cert ./nonexistent/ca.pem.: No such file or directory");
	ASSERT_EQ(vd_sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
			"-nodes -subj /CN=test-ca -days 30 -keyout ca.key -out ca.pem 2>/dev/null && "
			"chmod 0644 ca.key", self->d.dir), 0);
	ASSERT_EQ(vd_sh("sed -i 's|/nonexistent|%s|' %s", self->d.dir, self->d.conf), 0);
	refuses(&self->d, "key file is open to others, refusing to start");
	check_refuses(&self->d, "ca_key .*/ca.key. is open to others (mode 0644, want 0600)");
	ASSERT_EQ(vd_sh("chmod 0600 %s/ca.key", self->d.dir), 0);
	EXPECT_EQ(vd_sh("'%s' -n -c '%s' >/dev/null", getenv("VTPMD_BIN"), self->d.conf), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	EXPECT_EQ(vd_getrandom_rc(&self->d), 0u);
}

TEST_F_TIMEOUT(access, hooks_see_only_path_and_vtpmd_variables, 120)
{
	ASSERT_EQ(vd_sh("printf '#!/bin/sh\\nenv > %s/env.$$\\ncat >/dev/null\\n' > %s/envhook && "
			"chmod 0755 %s/envhook", self->d.dir, self->d.dir, self->d.dir), 0);
	setenv("VTPMD_TEST_SECRET", "leak", 1);
	setenv("LD_LIBRARY_PATH", "/nonexistent", 1);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, NULL), 0);
	ASSERT_EQ(vd_sh("printf '[hook.env]\\nexec = %s/envhook\\n' >> %s", self->d.dir,
			self->d.conf), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	ASSERT_EQ(vd_sh("for i in $(seq 100); do ls %s/env.* >/dev/null 2>&1 && exit 0; "
			"sleep 0.1; done; exit 1", self->d.dir), 0);
	/* what the shell adds itself (PWD, OLDPWD) aside */
	EXPECT_EQ(vd_sh("cat %s/env.* | grep -v -E '^(PWD|OLDPWD)=' | "
			"grep -v -E '^(PATH|VTPMD_[A-Z0-9_]+)=' && exit 1; "
			"grep -q '^VTPMD_TEST_SECRET' %s/env.* && exit 1; exit 0",
			self->d.dir, self->d.dir), 0);
}

/* Tokens and keys appear neither in the log (at debug level) nor in "vtpmd -n". */
TEST_F_TIMEOUT(access, secrets_are_never_logged_or_printed, 120)
{
	const char *token = "s3cr3t-T0ken-never-to-be-seen";

	ASSERT_EQ(vd_sh("umask 077; echo %s > %s/token", token, self->d.dir), 0);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, NULL), 0);
	ASSERT_EQ(vd_sh("printf '[hook.web]\\nurl = https://127.0.0.1:1/events\\n"
			"token_file = %s/token\\nretries = 1\\nretry_delay = 100ms\\n' >> %s",
			self->d.dir, self->d.conf), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	kill(self->d.pid, SIGUSR1);
	EXPECT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_EQ(vd_sh("for i in $(seq 100); do grep -q 'hook=web' %s && exit 0; sleep 0.1; done; "
			"exit 1", self->d.log), 0);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);
	EXPECT_NE(vd_sh("grep -n -e '%s' -e 'PRIVATE KEY' %s", token, self->d.log), 0);
	EXPECT_EQ(vd_sh("$VTPMD_BIN -n -c %s > %s/dump && grep -q 'token_file = ' %s/dump",
			self->d.conf, self->d.dir, self->d.dir), 0);
	EXPECT_NE(vd_sh("grep -n -e '%s' %s/dump", token, self->d.dir), 0);
}

TEST_TIMEOUT(hook_exec_as_runs_the_program_as_the_user_with_only_its_group, 30)
{
	char *argv[] = { (char *)"/bin/sh", (char *)"-c",
			 (char *)"echo $(id -u) $(id -g) $(id -G) >&2", NULL };
	const struct hook_cred nobody = { .uid = NOBODY, .gid = NOBODY };
	struct hook_result res;

	if (geteuid() != 0)
		TEST_SKIP("needs root to change user");
	if (access(HOOK_SETPRIV, X_OK) != 0)
		TEST_SKIP("no %s", HOOK_SETPRIV);
	ASSERT_EQ(hook_exec_as(argv, NULL, NULL, 0, 10000, &nobody, &res), 0);
	EXPECT_EQ(res.exit_status, 0);
	EXPECT_STREQ(res.err_tail, "65534 65534 65534");
	ASSERT_EQ(hook_exec_as(argv, NULL, NULL, 0, 10000, NULL, &res), 0);
	EXPECT_STREQ(res.err_tail, "0 0 0");
	argv[0] = (char *)"sh";
	EXPECT_EQ(hook_exec_as(argv, NULL, NULL, 0, 10000, &nobody, &res), -EINVAL);
}

TEST_F_TIMEOUT(access, hook_user_from_the_config_runs_the_daemons_hooks, 120)
{
	ASSERT_EQ(chmod(self->d.dir, 0711), 0);
	ASSERT_EQ(vd_sh("mkdir -m 1777 %s/pub && printf '#!/bin/sh\\nid -u > %s/pub/uid.$$\\n"
			"cat >/dev/null\\n' > %s/idhook && chmod 0755 %s/idhook",
			self->d.dir, self->d.dir, self->d.dir, self->d.dir), 0);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, NULL), 0);
	ASSERT_EQ(vd_sh("printf '[hook.id]\\nexec = %s/idhook\\nuser = nobody\\n' >> %s",
			self->d.dir, self->d.conf), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	ASSERT_EQ(vd_sh("for i in $(seq 100); do ls %s/pub/uid.* >/dev/null 2>&1 && exit 0; "
			"sleep 0.1; done; exit 1", self->d.dir), 0);
	EXPECT_EQ(vd_sh("cat %s/pub/uid.* | sort -u | grep -qx 65534", self->d.dir), 0);
	EXPECT_NE(vd_sh("cat %s/pub/uid.* | grep -qx 0", self->d.dir), 0);
}

TEST_HARNESS_MAIN
