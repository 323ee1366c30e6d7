#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tss2/tss2_tcti.h>

#include "fusedev.h"
#include "harness.h"

/*
 * The fuse suite: a real mount in a temporary directory, served by fusedev
 * with a fake TPM behind it.  The fake answers TPM2_GetRandom and echoes any
 * other command under a success header; it completes from a thread of its
 * own after a delay, or inline in submit, or holds commands until told.
 */

#define CC_GETRANDOM 0x17b
#define TAG_NO_SESSIONS 0x8001
#define RC_BAD_TAG 0x01e

struct fake_cmd {
	struct fake_cmd *next;
	struct fusedev_file *f;		/* holds a reference */
	size_t len;
	uint8_t cmd[FUSEDEV_BUF_SIZE];
};

struct fake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fake_cmd *head;		/* protected by lock, as all below */
	bool hold;
	bool stop;
	unsigned int delay_us;
	pthread_t thread;
	bool started;
	bool inline_complete;		/* answer inside submit */
	unsigned int inline_wait_us;	/* ... after yielding and waiting this long */
	int submit_err;
	char status[128];
	atomic_int opens;
	atomic_int releases;
	atomic_int commands;
	atomic_int bad_framing;
	atomic_uint last_id;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* The fake TPM: GetRandom gets bytes 0, 1, 2...; anything else an echo. */
static size_t fake_answer(const uint8_t *cmd, size_t len, uint8_t *rsp)
{
	uint16_t tag = (uint16_t)(cmd[0] << 8 | cmd[1]);
	size_t n;
	size_t i;

	memset(rsp, 0, FUSEDEV_HEADER_SIZE);
	rsp[0] = TAG_NO_SESSIONS >> 8;
	rsp[1] = TAG_NO_SESSIONS & 0xff;
	if (tag != 0x8001 && tag != 0x8002) {
		put_be32(rsp + 2, FUSEDEV_HEADER_SIZE);
		put_be32(rsp + 6, RC_BAD_TAG);
		return FUSEDEV_HEADER_SIZE;
	}
	if (be32(cmd + 6) == CC_GETRANDOM && len == 12) {
		n = (size_t)(cmd[10] << 8 | cmd[11]);
		if (n > 32)
			n = 32;
		put_be32(rsp + 2, 12 + n);
		rsp[10] = n >> 8;
		rsp[11] = n & 0xff;
		for (i = 0; i < n; i++)
			rsp[12 + i] = i;
		return 12 + n;
	}
	memcpy(rsp + FUSEDEV_HEADER_SIZE, cmd + FUSEDEV_HEADER_SIZE, len - FUSEDEV_HEADER_SIZE);
	put_be32(rsp + 2, len);
	return len;
}

static void fake_reply(struct fusedev_file *f, const uint8_t *cmd, size_t len)
{
	uint8_t rsp[FUSEDEV_BUF_SIZE];

	fusedev_file_complete(f, rsp, fake_answer(cmd, len, rsp));
}

static void *fake_main(void *arg)
{
	struct fake *k = arg;
	struct fake_cmd *c;

	pthread_mutex_lock(&k->lock);
	for (;;) {
		while (!k->stop && (!k->head || k->hold))
			pthread_cond_wait(&k->cond, &k->lock);
		if (k->stop)
			break;
		c = k->head;
		k->head = c->next;
		pthread_mutex_unlock(&k->lock);
		if (k->delay_us) {
			struct timespec ts = { 0, k->delay_us * 1000L };

			nanosleep(&ts, NULL);
		}
		fake_reply(c->f, c->cmd, c->len);
		fusedev_file_put(c->f);
		free(c);
		pthread_mutex_lock(&k->lock);
	}
	pthread_mutex_unlock(&k->lock);

	return NULL;
}

static int fake_open(void *userdata, struct fusedev_file *f)
{
	struct fake *k = userdata;

	atomic_fetch_add(&k->opens, 1);
	atomic_store(&k->last_id, (unsigned int)fusedev_file_id(f));
	fusedev_file_set_data(f, k);
	return 0;
}

static int fake_submit(void *userdata, struct fusedev_file *f, const uint8_t *cmd, size_t len)
{
	struct fake *k = userdata;
	struct fake_cmd *c;

	/* strict: only complete, well-framed commands reach the TPM */
	if (fusedev_framing_check(cmd, len) != 0 || fusedev_file_get_data(f) != k)
		atomic_fetch_add(&k->bad_framing, 1);
	if (k->submit_err)
		return k->submit_err;
	atomic_fetch_add(&k->commands, 1);
	if (k->inline_complete) {
		if (k->inline_wait_us) {
			struct timespec ts = { k->inline_wait_us / 1000000,
					       (k->inline_wait_us % 1000000) * 1000L };

			fusedev_file_yield(f);
			nanosleep(&ts, NULL);
		}
		fake_reply(f, cmd, len);
		return 0;
	}
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->len = len;
	memcpy(c->cmd, cmd, len);
	fusedev_file_get(f);
	c->f = f;
	pthread_mutex_lock(&k->lock);
	c->next = NULL;
	if (!k->head) {
		k->head = c;
	} else {
		struct fake_cmd *t = k->head;

		while (t->next)
			t = t->next;
		t->next = c;
	}
	pthread_cond_signal(&k->cond);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static void fake_release(void *userdata, struct fusedev_file *f)
{
	struct fake *k = userdata;

	atomic_fetch_add(&k->releases, 1);
}

static int fake_status(void *userdata, char **ret_buf, size_t *ret_len)
{
	struct fake *k = userdata;
	char *buf;

	pthread_mutex_lock(&k->lock);
	buf = strdup(k->status);
	pthread_mutex_unlock(&k->lock);
	if (!buf)
		return -ENOMEM;
	*ret_buf = buf;
	*ret_len = strlen(buf);
	return 0;
}

static void fake_log(void *userdata, int prio, const char *msg)
{
	if (getenv("FUSEDEV_TEST_VERBOSE"))
		TEST_LOG("log %d: %s", prio, msg);
}

static const struct fusedev_ops fake_ops = {
	.open = fake_open,
	.submit = fake_submit,
	.release = fake_release,
	.status = fake_status,
	.log = fake_log,
};

static void fake_set_hold(struct fake *k, bool hold)
{
	pthread_mutex_lock(&k->lock);
	k->hold = hold;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
}

static int fake_start(struct fake *k)
{
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	k->delay_us = 2000;
	strcpy(k->status, "state: serving\ninstance: test\n");
	if (pthread_create(&k->thread, NULL, fake_main, k) != 0)
		return -1;
	k->started = true;
	return 0;
}

/* Stop the fake: held commands are answered, then the thread ends. */
static void fake_stop(struct fake *k)
{
	struct fake_cmd *c;

	if (!k->started)
		return;
	fake_set_hold(k, false);
	for (;;) {
		pthread_mutex_lock(&k->lock);
		c = k->head;
		if (c)
			k->head = c->next;
		else
			k->stop = true;
		pthread_cond_broadcast(&k->cond);
		pthread_mutex_unlock(&k->lock);
		if (!c)
			break;
		fake_reply(c->f, c->cmd, c->len);
		fusedev_file_put(c->f);
		free(c);
	}
	pthread_join(k->thread, NULL);
	k->started = false;
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Bounded polling: true once *c == want, false after ms. */
static bool wait_count(atomic_int *c, int want, int ms)
{
	int64_t end = now_us() + (int64_t)ms * 1000;

	while (atomic_load(c) != want) {
		if (now_us() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

/* Bounded polling: true once pid has been reaped into *status. */
static bool wait_child(pid_t pid, int *status, int ms)
{
	int64_t end = now_us() + (int64_t)ms * 1000;

	while (waitpid(pid, status, WNOHANG) != pid) {
		if (now_us() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

/*
 * fork() for a client process.  The child drops every inherited descriptor
 * above stderr: it must not keep the server's /dev/fuse open, or a request
 * of its own would wait on a connection that it keeps alive itself.
 */
static pid_t client_fork(void)
{
	pid_t pid = fork();

	if (pid == 0)
		(void)close_range(3, ~0U, 0);
	return pid;
}

static size_t cmd_make(uint8_t *buf, size_t len, uint32_t cc)
{
	size_t i;

	buf[0] = 0x80;
	buf[1] = 0x01;
	put_be32(buf + 2, len);
	put_be32(buf + 6, cc);
	for (i = FUSEDEV_HEADER_SIZE; i < len; i++)
		buf[i] = (uint8_t)(i * 7);
	return len;
}

static size_t getrandom_make(uint8_t *buf, uint16_t n)
{
	cmd_make(buf, 12, CC_GETRANDOM);
	buf[10] = n >> 8;
	buf[11] = n & 0xff;
	return 12;
}

FIXTURE(mount)
{
	char dir[64];
	char tpm0[96];
	char tpmrm0[96];
	char status[96];
	struct fake fake;
	struct fusedev *dev;
	struct fusedev_config cfg;
};

static int mount_start(struct harness_fx_mount *self)
{
	return fusedev_start(&self->cfg, &fake_ops, &self->fake, &self->dev);
}

FIXTURE_SETUP(mount)
{
	if (geteuid() != 0)
		TEST_SKIP("needs root to mount");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		TEST_SKIP("no usable /dev/fuse");
	strcpy(self->dir, "/tmp/fusedev_test.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	snprintf(self->tpm0, sizeof(self->tpm0), "%s/tpm0", self->dir);
	snprintf(self->tpmrm0, sizeof(self->tpmrm0), "%s/tpmrm0", self->dir);
	snprintf(self->status, sizeof(self->status), "%s/status", self->dir);
	ASSERT_EQ(fake_start(&self->fake), 0);
	self->cfg.mountpoint = self->dir;
	self->cfg.uid = 0;
	self->cfg.gid = 0;
	self->cfg.mode = 0660;
	ASSERT_EQ(mount_start(self), 0);
}

FIXTURE_TEARDOWN(mount)
{
	fusedev_stop(self->dev);
	self->dev = NULL;
	fake_stop(&self->fake);
	if (self->dir[0] && rmdir(self->dir) != 0)
		TEST_LOG("rmdir %s: %s", self->dir, strerror(errno));
}

static ssize_t write_cmd(int fd, size_t len)
{
	uint8_t buf[FUSEDEV_BUF_SIZE];

	return write(fd, buf, cmd_make(buf, len, 0x144));
}

/* errno of a write, or 0 if it succeeded. */
static int write_errno(int fd, const void *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);

	if (n < 0)
		return errno;
	return n == (ssize_t)len ? 0 : -1;
}

static short poll_one(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r = poll(&p, 1, timeout_ms);

	return r < 0 ? -1 : r == 0 ? 0 : p.revents;
}

TEST_F(mount, lists_the_three_files)
{
	struct dirent *e;
	DIR *dir;
	int seen = 0;

	dir = opendir(self->dir);
	ASSERT_NE_NULL(dir);
	while ((e = readdir(dir))) {
		if (!strcmp(e->d_name, "tpm0"))
			seen |= 1;
		else if (!strcmp(e->d_name, "tpmrm0"))
			seen |= 2;
		else if (!strcmp(e->d_name, "status"))
			seen |= 4;
		else if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			seen |= 8;
	}
	closedir(dir);
	EXPECT_EQ(seen, 7);
}

TEST_F(mount, modes_and_owners_follow_config)
{
	struct stat st;

	fusedev_stop(self->dev);
	self->cfg.uid = 59;
	self->cfg.gid = 61;
	self->cfg.mode = 0640;
	ASSERT_EQ(mount_start(self), 0);

	ASSERT_EQ(stat(self->tpm0, &st), 0);
	EXPECT_EQ(st.st_mode, S_IFREG | 0640);
	EXPECT_EQ(st.st_uid, 59);
	EXPECT_EQ(st.st_gid, 61);
	ASSERT_EQ(stat(self->tpmrm0, &st), 0);
	EXPECT_EQ(st.st_mode, S_IFREG | 0640);
	ASSERT_EQ(stat(self->status, &st), 0);
	EXPECT_EQ(st.st_mode, S_IFREG | 0444);
	ASSERT_EQ(stat(self->dir, &st), 0);
	EXPECT_EQ(st.st_mode, S_IFDIR | 0755);
	EXPECT_EQ(stat("/nonexistent", &st), -1);
}

TEST_F(mount, mount_options)
{
	char line[1024];
	bool found = false;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "r");
	ASSERT_NE_NULL(f);
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, self->dir))
			continue;
		found = true;
		TEST_LOG("%s", line);
		EXPECT_NE_NULL(strstr(line, " - fuse.vtpmd vtpmd "));
		EXPECT_NE_NULL(strstr(line, "default_permissions"));
		EXPECT_NULL(strstr(line, "allow_other"));
	}
	fclose(f);
	EXPECT_TRUE(found);
}

TEST_F(mount, tpm0_is_exclusive)
{
	int fd;
	int fd2;
	int i;
	int busy = 0;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	fd2 = open(self->tpm0, O_RDWR);
	EXPECT_EQ(fd2, -1);
	EXPECT_EQ(errno, EBUSY);
	fd2 = open(self->tpm0, O_RDONLY | O_NONBLOCK);
	EXPECT_EQ(fd2, -1);
	EXPECT_EQ(errno, EBUSY);
	EXPECT_EQ(close(fd), 0);

	/* close and reopen at once, as tpm2-tss does when its probe fails */
	for (i = 0; i < 200; i++) {
		fd = open(self->tpm0, O_RDWR | O_NONBLOCK);
		if (fd < 0) {
			busy++;
			continue;
		}
		close(fd);
	}
	EXPECT_EQ(busy, 0);
}

TEST_F(mount, tpm0_stays_busy_while_a_dup_is_open)
{
	int64_t t0;
	int fd;
	int fd2;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	fd2 = dup(fd);
	ASSERT_GE(fd2, 0);
	/* a close(2) that is not the last one: no release follows */
	EXPECT_EQ(close(fd), 0);
	t0 = now_us();
	EXPECT_EQ(open(self->tpm0, O_RDWR), -1);
	EXPECT_EQ(errno, EBUSY);
	TEST_LOG("EBUSY after %lld us", (long long)(now_us() - t0));
	EXPECT_LT(now_us() - t0, 3000000);
	EXPECT_EQ(close(fd2), 0);
	fd = open(self->tpm0, O_RDWR);
	EXPECT_GE(fd, 0);
	close(fd);
}

TEST_F(mount, tpmrm0_takes_many_opens)
{
	uint8_t buf[64];
	int fds[8];
	int i;

	for (i = 0; i < 8; i++) {
		fds[i] = open(self->tpmrm0, O_RDWR);
		ASSERT_GE(fds[i], 0);
	}
	/* tpmrm0 beside tpm0 is fine, as in the kernel */
	close(fds[0]);
	fds[0] = open(self->tpm0, O_RDWR);
	ASSERT_GE(fds[0], 0);
	for (i = 0; i < 8; i++)
		EXPECT_EQ(write_cmd(fds[i], 20 + i), 20 + i);
	for (i = 7; i >= 0; i--) {
		EXPECT_EQ(read(fds[i], buf, sizeof(buf)), 20 + i);
		EXPECT_EQ(buf[20 + i - 1], (uint8_t)((20 + i - 1) * 7));
	}
	for (i = 0; i < 8; i++)
		close(fds[i]);
	EXPECT_TRUE(wait_count(&self->fake.releases, 9, 2000));
	EXPECT_EQ(atomic_load(&self->fake.opens), 9);
	EXPECT_EQ(atomic_load(&self->fake.bad_framing), 0);
}

TEST_F(mount, write_errno_contract)
{
	uint8_t buf[2 * FUSEDEV_BUF_SIZE];
	int fd;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	cmd_make(buf, 12, 0x144);
	EXPECT_EQ(write_errno(fd, buf, 0), 0);	/* the kernel sends no write */
	EXPECT_EQ(write_errno(fd, buf, 5), EINVAL);
	EXPECT_EQ(write_errno(fd, buf, 9), EINVAL);
	EXPECT_EQ(write_errno(fd, buf, 11), EINVAL);	/* header says 12 */
	cmd_make(buf, 13, 0x144);
	EXPECT_EQ(write_errno(fd, buf, 12), EINVAL);	/* header says 13 */
	cmd_make(buf, FUSEDEV_BUF_SIZE + 1, 0x144);
	EXPECT_EQ(write_errno(fd, buf, FUSEDEV_BUF_SIZE + 1), E2BIG);
	cmd_make(buf, sizeof(buf), 0x144);
	EXPECT_EQ(write_errno(fd, buf, sizeof(buf)), E2BIG);
	EXPECT_EQ(atomic_load(&self->fake.commands), 0);

	/* a refused write leaves the file usable */
	cmd_make(buf, FUSEDEV_BUF_SIZE, 0x144);
	EXPECT_EQ(write_errno(fd, buf, FUSEDEV_BUF_SIZE), 0);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), FUSEDEV_BUF_SIZE);
	close(fd);
}

TEST_F(mount, write_while_busy_is_ebusy)
{
	uint8_t buf[FUSEDEV_BUF_SIZE + 8];
	int fd;

	fd = open(self->tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	fake_set_hold(&self->fake, true);
	EXPECT_EQ(write_cmd(fd, 20), 20);
	/* in flight */
	EXPECT_EQ(write_cmd(fd, 20), -1);
	EXPECT_EQ(errno, EBUSY);
	/* the kernel's order: EBUSY comes before EINVAL */
	EXPECT_EQ(write_errno(fd, buf, 5), EBUSY);
	EXPECT_EQ(write_errno(fd, buf, sizeof(buf)), E2BIG);
	fake_set_hold(&self->fake, false);
	EXPECT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	/* response unread */
	EXPECT_EQ(write_cmd(fd, 20), -1);
	EXPECT_EQ(errno, EBUSY);
	/* partly read: like the kernel, a new command is taken, the rest dropped */
	EXPECT_EQ(read(fd, buf, 10), 10);
	EXPECT_EQ(write_cmd(fd, 30), 30);
	EXPECT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 30);
	EXPECT_EQ(atomic_load(&self->fake.commands), 2);
	close(fd);
}

TEST_F(mount, submit_error_is_returned_by_write)
{
	uint8_t buf[64];
	int fd;

	fd = open(self->tpmrm0, O_RDWR);
	ASSERT_GE(fd, 0);
	self->fake.submit_err = -ENOSPC;
	EXPECT_EQ(write_cmd(fd, 20), -1);
	EXPECT_EQ(errno, ENOSPC);
	self->fake.submit_err = 0;
	/* nothing is left in flight */
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	EXPECT_EQ(write_cmd(fd, 20), 20);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 20);
	close(fd);
}

TEST_F(mount, poll_revents_are_exact)
{
	uint8_t buf[64];
	int fd;

	fd = open(self->tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	/* idle: writable, and nothing to read */
	EXPECT_EQ(poll_one(fd, POLLIN | POLLOUT, 0), POLLOUT);
	EXPECT_EQ(poll_one(fd, POLLIN, 0), 0);

	fake_set_hold(&self->fake, true);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
	EXPECT_EQ(poll_one(fd, POLLIN | POLLOUT, 0), 0);
	EXPECT_EQ(poll_one(fd, POLLIN, 50), 0);
	fake_set_hold(&self->fake, false);
	/* ready: exactly POLLIN, whatever else was asked for */
	EXPECT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	EXPECT_EQ(poll_one(fd, POLLIN | POLLOUT | POLLRDNORM | POLLPRI, 0), POLLIN);
	EXPECT_EQ(read(fd, buf, 10), 10);
	EXPECT_EQ(poll_one(fd, POLLIN, 0), POLLIN);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 10);
	EXPECT_EQ(poll_one(fd, POLLIN | POLLOUT, 0), POLLOUT);
	close(fd);
}

TEST_F(mount, poll_is_woken_by_the_response)
{
	uint8_t buf[64];
	int64_t t0;
	int fd;

	fd = open(self->tpmrm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	self->fake.delay_us = 100000;
	t0 = now_us();
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 16)), 12);
	EXPECT_EQ(poll_one(fd, POLLIN, 5000), POLLIN);
	EXPECT_GE(now_us() - t0, 90000);
	EXPECT_LT(now_us() - t0, 3000000);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 28);
	close(fd);
}

/* A command answered inside write(2) is ready for the first poll. */
TEST_F(mount, answer_inside_write_is_ready_at_once)
{
	uint8_t buf[64];
	int fd;

	self->fake.inline_complete = true;
	fd = open(self->tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	for (int i = 0; i < 3; i++) {
		EXPECT_EQ(write(fd, buf, getrandom_make(buf, 16)), 12);
		EXPECT_EQ(poll_one(fd, POLLIN, 0), POLLIN);
		EXPECT_EQ(read(fd, buf, sizeof(buf)), 28);
		EXPECT_EQ(buf[12 + 15], 15);
	}
	close(fd);
}

/*
 * Notifications go only to a poll that found nothing: after rounds whose
 * poll was answered at once, a poll that has to wait is still woken.
 */
TEST_F(mount, waiting_poll_is_woken_after_answered_ones)
{
	uint8_t buf[64];
	int64_t t0;
	int fd;

	fd = open(self->tpmrm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	self->fake.inline_complete = true;
	for (int i = 0; i < 3; i++) {
		EXPECT_EQ(write(fd, buf, getrandom_make(buf, 16)), 12);
		EXPECT_EQ(poll_one(fd, POLLIN, 1000), POLLIN);
		EXPECT_EQ(read(fd, buf, sizeof(buf)), 28);
	}
	self->fake.inline_complete = false;
	self->fake.delay_us = 100000;
	for (int i = 0; i < 2; i++) {
		t0 = now_us();
		EXPECT_EQ(write(fd, buf, getrandom_make(buf, 16)), 12);
		EXPECT_EQ(poll_one(fd, POLLIN, 5000), POLLIN);
		EXPECT_GE(now_us() - t0, 90000);
		EXPECT_LT(now_us() - t0, 3000000);
		EXPECT_EQ(read(fd, buf, sizeof(buf)), 28);
	}
	close(fd);
}

/*
 * An edge-triggered epoll asks the file again only after a notification:
 * every answer must send one, also one made inside write(2) and also after
 * rounds whose readiness was seen at once.
 */
static void epoll_et_rounds(struct harness_fx_mount *self, const char *path)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	uint8_t buf[64];
	int ep;
	int fd;

	fd = open(path, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(ep, 0);
	ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(write(fd, buf, getrandom_make(buf, 16)), 12);
		EXPECT_EQ(epoll_wait(ep, &ev, 1, 3000), 1);
		EXPECT_EQ(read(fd, buf, sizeof(buf)), 28);
	}
	close(ep);
	close(fd);
}

TEST_F(mount, edge_triggered_epoll_sees_every_answer)
{
	self->fake.inline_complete = true;
	epoll_et_rounds(self, self->tpm0);
	self->fake.inline_complete = false;
	self->fake.delay_us = 20000;
	epoll_et_rounds(self, self->tpmrm0);
}

/*
 * A worker that waits inside submit after fusedev_file_yield() leaves the
 * mount to the others: the status file and other opens are served
 * meanwhile, and the answer is still ready when write(2) returns.
 */
static void *slow_write(void *arg)
{
	const char *path = arg;
	uint8_t buf[64];
	intptr_t ok = 0;
	int fd;

	fd = open(path, O_RDWR | O_NONBLOCK);
	if (fd >= 0 && write(fd, buf, getrandom_make(buf, 16)) == 12 &&
	    poll_one(fd, POLLIN, 0) == POLLIN && read(fd, buf, sizeof(buf)) == 28)
		ok = 1;
	if (fd >= 0)
		close(fd);
	return (void *)ok;
}

TEST_F(mount, a_waiting_submit_yields_the_mount)
{
	pthread_t t;
	char buf[256];
	void *ok = NULL;
	int64_t t0;
	int fd;

	self->fake.inline_complete = true;
	self->fake.inline_wait_us = 1500000;
	ASSERT_EQ(pthread_create(&t, NULL, slow_write, self->tpm0), 0);
	usleep(200 * 1000);	/* the write is inside submit now */
	t0 = now_us();
	fd = open(self->status, O_RDONLY);
	ASSERT_GE(fd, 0);
	EXPECT_GT(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	fd = open(self->tpmrm0, O_RDWR);
	EXPECT_GE(fd, 0);
	close(fd);
	TEST_LOG("served in %lld us while a submit waits", (long long)(now_us() - t0));
	EXPECT_LT(now_us() - t0, 1000000);
	pthread_join(t, &ok);
	EXPECT_EQ((intptr_t)ok, 1);
	self->fake.inline_wait_us = 0;
}

TEST_F(mount, partial_reads_drain_the_response)
{
	uint8_t cmd[100];
	uint8_t buf[200];
	int fd;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	cmd_make(cmd, sizeof(cmd), 0x144);
	ASSERT_EQ(write(fd, cmd, sizeof(cmd)), 100);
	ASSERT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	EXPECT_EQ(read(fd, buf, 10), 10);
	EXPECT_EQ(be32(buf + 2), 100);
	EXPECT_EQ(read(fd, buf + 10, 30), 30);
	EXPECT_EQ(read(fd, buf + 40, sizeof(buf) - 40), 60);
	EXPECT_EQ(memcmp(buf + 10, cmd + 10, 90), 0);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	close(fd);
}

TEST_F(mount, read_with_nothing_pending_returns_0)
{
	uint8_t buf[64];
	int fd;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 4)), 12);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 16);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	close(fd);
}

TEST_F(mount, nonblocking_read_in_flight_is_eagain)
{
	uint8_t buf[64];
	int fd;

	fd = open(self->tpmrm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	fake_set_hold(&self->fake, true);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 4)), 12);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), -1);
	EXPECT_EQ(errno, EAGAIN);
	fake_set_hold(&self->fake, false);
	EXPECT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 16);
	close(fd);
}

TEST_F(mount, blocking_read_waits_for_the_response)
{
	uint8_t buf[64];
	int64_t t0;
	int fd;

	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	self->fake.delay_us = 50000;
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 32)), 12);
	t0 = now_us();
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 44);
	EXPECT_GE(now_us() - t0, 30000);
	EXPECT_EQ(buf[43], 31);
	/* a short blocking read keeps the rest */
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 32)), 12);
	EXPECT_EQ(read(fd, buf, 12), 12);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 32);
	EXPECT_EQ(buf[31], 31);
	close(fd);
}

static int proc_state(pid_t pid)
{
	char path[64];
	char line[512];
	char *p;
	FILE *f;
	int c = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(line, sizeof(line), f)) {
		p = strrchr(line, ')');
		if (p && p[1] == ' ')
			c = p[2];
	}
	fclose(f);
	return c;
}

/* True once pid sleeps (interruptibly), as a reader blocked in FUSE does. */
static bool wait_state(pid_t pid, int ms)
{
	int64_t end = now_us() + (int64_t)ms * 1000;

	while (proc_state(pid) != 'S') {
		if (now_us() > end)
			return false;
		sleep_ms(1);
	}
	/* the state is 'S' a little before the read reaches the server */
	sleep_ms(20);
	return true;
}

static void on_sigusr1(int sig)
{
}

/* Child: open, write, block in read; exit code says what read did. */
static pid_t child_blocked_read(const char *path, bool handler)
{
	struct sigaction sa;
	uint8_t buf[64];
	pid_t pid;
	ssize_t n;
	int fd;

	pid = client_fork();
	if (pid != 0)
		return pid;
	if (handler) {
		/* no SA_RESTART: the interrupted read must fail with EINTR */
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigusr1;
		sigaction(SIGUSR1, &sa, NULL);
	}
	fd = open(path, O_RDWR);
	if (fd < 0)
		_exit(10);
	if (write(fd, buf, getrandom_make(buf, 8)) != 12)
		_exit(11);
	n = read(fd, buf, sizeof(buf));
	if (n < 0 && errno == EINTR)
		_exit(0);
	_exit(n < 0 ? 12 : 13);
}

TEST_F(mount, blocked_read_is_interruptible)
{
	int status;
	pid_t pid;

	fake_set_hold(&self->fake, true);
	pid = child_blocked_read(self->tpmrm0, true);
	ASSERT_GT(pid, 0);
	ASSERT_TRUE(wait_count(&self->fake.commands, 1, 5000));
	ASSERT_TRUE(wait_state(pid, 5000));
	EXPECT_EQ(kill(pid, SIGUSR1), 0);
	EXPECT_TRUE(wait_child(pid, &status, 5000));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0);
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));
	fake_set_hold(&self->fake, false);
}

TEST_F(mount, blocked_read_is_killable)
{
	int status = 0;
	int64_t t0;
	pid_t pid;
	int fd;

	fake_set_hold(&self->fake, true);
	pid = child_blocked_read(self->tpm0, false);
	ASSERT_GT(pid, 0);
	ASSERT_TRUE(wait_count(&self->fake.commands, 1, 5000));
	ASSERT_TRUE(wait_state(pid, 5000));
	t0 = now_us();
	EXPECT_EQ(kill(pid, SIGKILL), 0);
	EXPECT_TRUE(wait_child(pid, &status, 5000));
	TEST_LOG("killed reader reaped in %lld us", (long long)(now_us() - t0));
	EXPECT_TRUE(WIFSIGNALED(status));
	/* release comes on SIGKILL too, and tpm0 is free again */
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));
	fake_set_hold(&self->fake, false);
	fd = open(self->tpm0, O_RDWR);
	EXPECT_GE(fd, 0);
	close(fd);
}

TEST_F(mount, release_on_close_and_on_kill)
{
	int status = 0;
	pid_t pid;
	int fd;

	fd = open(self->tpmrm0, O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(atomic_load(&self->fake.releases), 0);
	close(fd);
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));

	pid = client_fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		if (open(self->tpmrm0, O_RDWR) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	ASSERT_TRUE(wait_count(&self->fake.opens, 2, 5000));
	EXPECT_EQ(kill(pid, SIGKILL), 0);
	EXPECT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_TRUE(wait_count(&self->fake.releases, 2, 2000));
}

TEST_F(mount, close_with_command_in_flight)
{
	uint8_t buf[64];
	int fd;

	fake_set_hold(&self->fake, true);
	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
	close(fd);
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));
	/* the late response is dropped; a new open starts clean */
	fake_set_hold(&self->fake, false);
	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	close(fd);
}

/* A backend whose submit fails the command asynchronously. */
static struct fusedev_file *failing_file;

static int failing_submit(void *userdata, struct fusedev_file *f, const uint8_t *cmd, size_t len)
{
	fusedev_file_get(f);
	failing_file = f;
	return 0;
}

TEST_F(mount, failed_command_reads_as_error)
{
	struct fusedev_ops ops = fake_ops;
	uint8_t buf[64];
	int fd;

	fusedev_stop(self->dev);
	ops.submit = failing_submit;
	ASSERT_EQ(fusedev_start(&self->cfg, &ops, &self->fake, &self->dev), 0);
	fd = open(self->tpmrm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
	ASSERT_NE_NULL(failing_file);
	fusedev_file_fail(failing_file, -EPIPE);
	fusedev_file_put(failing_file);
	EXPECT_EQ(poll_one(fd, POLLIN, 2000), POLLIN);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), -1);
	EXPECT_EQ(errno, EPIPE);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), 0);
	EXPECT_EQ(poll_one(fd, POLLIN | POLLOUT, 0), POLLOUT);
	close(fd);
}

TEST_F(mount, oversize_response_reads_as_eio)
{
	struct fusedev_ops ops = fake_ops;
	uint8_t buf[FUSEDEV_BUF_SIZE + 1];
	int fd;

	fusedev_stop(self->dev);
	ops.submit = failing_submit;
	ASSERT_EQ(fusedev_start(&self->cfg, &ops, &self->fake, &self->dev), 0);
	fd = open(self->tpm0, O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
	ASSERT_NE_NULL(failing_file);
	memset(buf, 0, sizeof(buf));
	fusedev_file_complete(failing_file, buf, sizeof(buf));
	fusedev_file_put(failing_file);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), -1);
	EXPECT_EQ(errno, EIO);
	close(fd);
}

static ssize_t read_all(const char *path, char *buf, size_t size)
{
	ssize_t n;
	size_t got = 0;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	while (got < size - 1 && (n = read(fd, buf + got, 7)) > 0)
		got += n;
	buf[got] = 0;
	close(fd);
	return got;
}

TEST_F(mount, status_file)
{
	char buf[256];
	struct stat st;
	int fd;

	ASSERT_EQ(read_all(self->status, buf, sizeof(buf)), (ssize_t)strlen(self->fake.status));
	EXPECT_STREQ(buf, self->fake.status);
	ASSERT_EQ(stat(self->status, &st), 0);
	EXPECT_EQ(st.st_size, (off_t)strlen(self->fake.status));
	/* root passes the permission check; the file still refuses writes */
	EXPECT_EQ(open(self->status, O_WRONLY), -1);
	EXPECT_EQ(errno, EACCES);
	EXPECT_EQ(open(self->status, O_RDWR), -1);
	EXPECT_EQ(errno, EACCES);

	/* one open sees one snapshot */
	fd = open(self->status, O_RDONLY);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(read(fd, buf, 5), 5);
	pthread_mutex_lock(&self->fake.lock);
	strcpy(self->fake.status, "state: rotating\n");
	pthread_mutex_unlock(&self->fake.lock);
	EXPECT_EQ(read(fd, buf + 5, sizeof(buf) - 5), 25);
	buf[30] = 0;
	EXPECT_STREQ(buf, "state: serving\ninstance: test\n");
	close(fd);
	ASSERT_EQ(read_all(self->status, buf, sizeof(buf)), 16);
	EXPECT_STREQ(buf, "state: rotating\n");
}

TEST_F(mount, stop_with_files_open)
{
	uint8_t buf[64];
	pid_t pid;
	int status = 0;
	int fd;
	int fd2;

	fd = open(self->tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(fd, 0);
	fd2 = open(self->tpmrm0, O_RDWR);
	ASSERT_GE(fd2, 0);
	fake_set_hold(&self->fake, true);
	EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
	/* a reader parked on a command the fake never answers */
	pid = child_blocked_read(self->tpmrm0, false);
	ASSERT_GT(pid, 0);
	ASSERT_TRUE(wait_count(&self->fake.commands, 2, 5000));
	ASSERT_TRUE(wait_state(pid, 5000));

	fusedev_stop(self->dev);
	self->dev = NULL;
	EXPECT_TRUE(wait_child(pid, &status, 5000));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 12);	/* read failed, not EINTR */
	EXPECT_EQ(atomic_load(&self->fake.releases), 3);
	EXPECT_EQ(read(fd, buf, sizeof(buf)), -1);
	TEST_LOG("read after stop: %s", strerror(errno));
	EXPECT_EQ(write(fd2, buf, 12), -1);
	close(fd);
	close(fd2);
	/* the fake still answers its held commands: they are dropped */
	fake_stop(&self->fake);
}

TEST_F(mount, restart_on_the_same_mountpoint)
{
	uint8_t buf[64];
	int i;
	int fd;

	for (i = 0; i < 5; i++) {
		fusedev_stop(self->dev);
		self->dev = NULL;
		ASSERT_EQ(mount_start(self), 0);
		fd = open(self->tpm0, O_RDWR);
		ASSERT_GE(fd, 0);
		EXPECT_EQ(write(fd, buf, getrandom_make(buf, 8)), 12);
		EXPECT_EQ(read(fd, buf, sizeof(buf)), 20);
		close(fd);
	}
}

/* tpm2-tss' device TCTI, loaded at run time. */
static void *tcti_load(const char *lib)
{
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);

	if (!h)
		TEST_LOG("dlopen %s: %s", lib, dlerror());
	return h;
}

static void tcti_getrandom(TSS2_TCTI_CONTEXT *ctx, int rounds)
{
	uint8_t cmd[12];
	uint8_t rsp[4096];
	size_t len;
	int i;

	for (i = 0; i < rounds; i++) {
		ASSERT_EQ(Tss2_Tcti_Transmit(ctx, getrandom_make(cmd, 16), cmd), TSS2_RC_SUCCESS);
		len = sizeof(rsp);
		ASSERT_EQ(Tss2_Tcti_Receive(ctx, &len, rsp, TSS2_TCTI_TIMEOUT_BLOCK),
			  TSS2_RC_SUCCESS);
		ASSERT_EQ(len, 28);
		EXPECT_EQ(be32(rsp + 6), 0);
		EXPECT_EQ(rsp[11], 16);
		EXPECT_EQ(rsp[27], 15);
	}
}

TEST_F(mount, tss2_device_tcti_on_tpm0)
{
	TSS2_TCTI_INIT_FUNC init;
	TSS2_TCTI_CONTEXT *ctx;
	size_t size = 0;
	void *h;

	h = tcti_load("libtss2-tcti-device.so.0");
	if (!h)
		TEST_SKIP("no libtss2-tcti-device");
	*(void **)&init = dlsym(h, "Tss2_Tcti_Device_Init");
	ASSERT_TRUE(init != NULL);
	ASSERT_EQ(init(NULL, &size, self->tpm0), TSS2_RC_SUCCESS);
	ctx = calloc(1, size);
	ASSERT_NE_NULL(ctx);
	ASSERT_EQ(init(ctx, &size, self->tpm0), TSS2_RC_SUCCESS);
	/* the probe: one GetRandom(8), and partial reads worked (no reopen) */
	EXPECT_EQ(atomic_load(&self->fake.commands), 1);
	EXPECT_EQ(atomic_load(&self->fake.opens), 1);
	tcti_getrandom(ctx, 3);
	EXPECT_EQ(atomic_load(&self->fake.commands), 4);
	Tss2_Tcti_Finalize(ctx);
	free(ctx);
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));
	EXPECT_EQ(atomic_load(&self->fake.bad_framing), 0);
	dlclose(h);
}

TEST_F(mount, tss2_tctildr_on_tpmrm0)
{
	TSS2_RC (*ldr_init)(const char *, TSS2_TCTI_CONTEXT **);
	void (*ldr_fini)(TSS2_TCTI_CONTEXT **);
	TSS2_TCTI_CONTEXT *ctx = NULL;
	char conf[128];
	void *h;

	h = tcti_load("libtss2-tctildr.so.0");
	if (!h)
		TEST_SKIP("no libtss2-tctildr");
	*(void **)&ldr_init = dlsym(h, "Tss2_TctiLdr_Initialize");
	*(void **)&ldr_fini = dlsym(h, "Tss2_TctiLdr_Finalize");
	ASSERT_TRUE(ldr_init != NULL);
	ASSERT_TRUE(ldr_fini != NULL);
	snprintf(conf, sizeof(conf), "device:%s", self->tpmrm0);
	ASSERT_EQ(ldr_init(conf, &ctx), TSS2_RC_SUCCESS);
	tcti_getrandom(ctx, 3);
	ldr_fini(&ctx);
	EXPECT_EQ(atomic_load(&self->fake.commands), 4);
	EXPECT_TRUE(wait_count(&self->fake.releases, 1, 2000));
	dlclose(h);
}

struct client_arg {
	const char *path;
	int id;
	int bad;
};

/* One client thread: echo round trips whose bytes name the thread. */
static void *client_main(void *arg)
{
	struct client_arg *a = arg;
	uint8_t cmd[64];
	uint8_t rsp[64];
	size_t len = 16 + a->id;
	int fd;
	int i;

	fd = open(a->path, O_RDWR | O_NONBLOCK);
	if (fd < 0) {
		a->bad = -1;
		return NULL;
	}
	cmd_make(cmd, len, 0x144);
	for (i = 0; i < 300; i++) {
		cmd[12] = a->id;
		cmd[13] = i;
		if (write(fd, cmd, len) != (ssize_t)len ||
		    poll_one(fd, POLLIN, 5000) != POLLIN ||
		    read(fd, rsp, sizeof(rsp)) != (ssize_t)len ||
		    memcmp(rsp + 10, cmd + 10, len - 10) != 0)
			a->bad++;
	}
	close(fd);
	return NULL;
}

TEST_F(mount, concurrent_clients)
{
	struct client_arg args[8];
	pthread_t threads[8];
	int i;

	self->fake.delay_us = 0;
	for (i = 0; i < 8; i++) {
		args[i].path = self->tpmrm0;
		args[i].id = i;
		args[i].bad = 0;
		ASSERT_EQ(pthread_create(&threads[i], NULL, client_main, &args[i]), 0);
	}
	for (i = 0; i < 8; i++) {
		pthread_join(threads[i], NULL);
		EXPECT_EQ(args[i].bad, 0);
	}
	EXPECT_EQ(atomic_load(&self->fake.commands), 8 * 300);
	EXPECT_TRUE(wait_count(&self->fake.releases, 8, 2000));
}

/* As user uid (and gid), try to open path; 0 or the errno. */
static int open_as(uid_t uid, const char *path, int flags)
{
	int status = 0;
	pid_t pid;
	int fd;

	pid = client_fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)
			_exit(255);
		fd = open(path, flags);
		_exit(fd < 0 ? errno : 0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

TEST_F(mount, permissions_follow_config)
{
	/* private to root without allow_other, whatever the file modes */
	EXPECT_EQ(open_as(65534, self->status, O_RDONLY), EACCES);

	fusedev_stop(self->dev);
	self->cfg.allow_other = true;
	self->cfg.uid = 65534;
	self->cfg.gid = 65534;
	self->cfg.mode = 0600;
	ASSERT_EQ(mount_start(self), 0);
	EXPECT_EQ(open_as(65534, self->tpm0, O_RDWR), 0);
	EXPECT_EQ(open_as(65534, self->tpmrm0, O_RDWR), 0);
	EXPECT_EQ(open_as(65534, self->status, O_RDONLY), 0);
	EXPECT_EQ(open_as(65533, self->tpm0, O_RDWR), EACCES);
	EXPECT_EQ(open_as(65533, self->tpmrm0, O_RDONLY), EACCES);
	EXPECT_EQ(open_as(65533, self->status, O_RDONLY), 0);
	EXPECT_EQ(open_as(65533, self->status, O_WRONLY), EACCES);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a;
	int64_t y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Round trips of GetRandom(8) in the tpm2-tss pattern; logs percentiles. */
static void bench(const char *path, const char *what, bool with_poll, int flags)
{
	enum { WARMUP = 200, ROUNDS = 3000 };
	static int64_t t[ROUNDS];
	uint8_t cmd[12];
	uint8_t rsp[64];
	int64_t t0;
	int i;
	int fd;

	fd = open(path, O_RDWR | flags);
	ASSERT_GE(fd, 0);
	getrandom_make(cmd, 8);
	for (i = -WARMUP; i < ROUNDS; i++) {
		t0 = now_us();
		ASSERT_EQ(write(fd, cmd, sizeof(cmd)), 12);
		if (with_poll)
			ASSERT_EQ(poll_one(fd, POLLIN, 5000), POLLIN);
		ASSERT_EQ(read(fd, rsp, sizeof(rsp)), 20);
		if (i >= 0)
			t[i] = now_us() - t0;
	}
	close(fd);
	qsort(t, ROUNDS, sizeof(t[0]), cmp_i64);
	TEST_LOG("bench %-34s median %3lld us  p90 %3lld us  p99 %4lld us", what,
		 (long long)t[ROUNDS / 2], (long long)t[ROUNDS * 9 / 10],
		 (long long)t[ROUNDS * 99 / 100]);
}

TEST_F_TIMEOUT(mount, bench_round_trips, 120)
{
	self->fake.inline_complete = true;
	bench(self->tpmrm0, "inline: write+read", false, 0);
	bench(self->tpmrm0, "inline: write+poll+read", true, O_NONBLOCK);
	self->fake.inline_complete = false;
	self->fake.delay_us = 0;
	bench(self->tpmrm0, "thread: write+read (parked)", false, 0);
	bench(self->tpmrm0, "thread: write+poll+read", true, O_NONBLOCK);
}

TEST_HARNESS_MAIN
