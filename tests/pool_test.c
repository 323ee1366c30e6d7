/*
 * The ready pool with real instance processes: refill to its size, a warm
 * spare that pool_take() hands over, activation markers, what a restart
 * finds on disk (half-made and once-activated instances), resizing,
 * retirement, resume, and a manufacturing failure that backs off.
 */
#include "harness.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "localca.h"
#include "pool.h"

FIXTURE(pool) {
	char dir[64];
	char ca_cert[128];
	char ca_key[128];
	struct pool *p;
};

static void quiet(int prio, const char *fmt, ...)
{
}

FIXTURE_SETUP(pool)
{
	if (!getenv("VTPMD_INSTANCE_BIN"))
		TEST_SKIP("VTPMD_INSTANCE_BIN not set (run through meson)");
	snprintf(self->dir, sizeof(self->dir), "/tmp/vtpmd-pool.XXXXXX");
	ASSERT_NE_NULL(mkdtemp(self->dir));
	snprintf(self->ca_cert, sizeof(self->ca_cert), "%s/ca.pem", self->dir);
	snprintf(self->ca_key, sizeof(self->ca_key), "%s/ca.key", self->dir);
	ASSERT_EQ(localca_create(self->ca_cert, self->ca_key), 0);
}

FIXTURE_TEARDOWN(pool)
{
	pool_free(self->p);
	if (self->dir[0])
		(void)fsutil_rm_rf(self->dir);
}

static int open_pool(struct pool_config *c, const char *dir, const char *cert,
		     const char *key, unsigned size, struct pool **ret)
{
	memset(c, 0, sizeof(*c));
	c->state_dir = dir;
	c->helper = getenv("VTPMD_INSTANCE_BIN");
	c->size = size;
	c->workers = 2;
	c->grace_ms = 200;
	c->params.ek_rsa = false;	/* ECC only: fast */
	c->params.ek_ecc = true;
	c->params.ak_alg = META_ALG_ECC_P256;
	c->params.ak_handle = 0x81008000;
	c->params.ca_cert = cert;
	c->params.ca_key = key;
	c->inst_log.level = LOG_WARNING;
	c->log = quiet;

	return pool_new(c, ret);
}

static unsigned wait_ready(struct pool *p, unsigned want)
{
	unsigned n = 0;
	int i;

	for (i = 0; i < 600; i++) {
		n = pool_ready_count(p);
		if (n >= want)
			break;
		usleep(50 * 1000);
	}

	return n;
}

static int count_entries(const char *dir, const char *suffix)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.')
			continue;
		if (!suffix || (len > strlen(suffix) &&
				strcmp(de->d_name + len - strlen(suffix), suffix) == 0))
			n++;
	}
	closedir(d);

	return n;
}

TEST(localca_makes_a_ca_openssl_accepts)
{
	char dir[] = "/tmp/vtpmd-ca.XXXXXX";
	char cert[128];
	char key[128];
	char cmd[512];
	struct stat st;

	ASSERT_NE_NULL(mkdtemp(dir));
	snprintf(cert, sizeof(cert), "%s/ca.pem", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	ASSERT_EQ(localca_create(cert, key), 0);
	ASSERT_EQ(stat(key, &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0600);
	snprintf(cmd, sizeof(cmd),
		 "openssl verify -CAfile %s/ca.pem %s/ca.pem >/dev/null && "
		 "openssl x509 -in %s/ca.pem -noout -ext basicConstraints | grep -q 'CA:TRUE'",
		 dir, dir, dir);
	EXPECT_EQ(system(cmd), 0);
	/* an unwritable place fails cleanly */
	EXPECT_LT(localca_create("/nonexistent/dir/ca.pem", "/nonexistent/dir/ca.key"), 0);
	(void)fsutil_rm_rf(dir);
}

TEST_F_TIMEOUT(pool, fills_and_hands_over_a_warm_spare, 120)
{
	struct pool_config c;
	struct inst *in = NULL;
	struct meta m = {0};
	char active[META_ID_MAX];

	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, self->ca_key, 2, &self->p), 0);
	EXPECT_EQ(wait_ready(self->p, 2), 2);
	ASSERT_EQ(pool_take(self->p, 30000, &in, &m), 0);
	EXPECT_TRUE(inst_is_started(in));
	EXPECT_EQ(m.n_ek, 1);
	EXPECT_EQ(m.ak.handle, 0x81008000u);
	EXPECT_EQ(pool_active_load(self->p, active, sizeof(active)), -ENOENT);
	ASSERT_EQ(pool_mark_activated(self->p, m.id), 0);
	ASSERT_EQ(pool_active_load(self->p, active, sizeof(active)), 0);
	EXPECT_STREQ(active, m.id);
	/* taking one starts a refill */
	EXPECT_EQ(wait_ready(self->p, 2), 2);
	inst_stop(in);
	meta_clear(&m);
}

TEST_F_TIMEOUT(pool, restart_discards_half_made_and_activated, 120)
{
	struct pool_config c;
	struct inst *in = NULL;
	struct meta m = {0};
	struct meta m2 = {0};
	struct inst *spare = NULL;
	struct meta ms = {0};
	char path[256];

	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, self->ca_key, 1, &self->p), 0);
	EXPECT_EQ(wait_ready(self->p, 1), 1);
	ASSERT_EQ(pool_take(self->p, 30000, &in, &m), 0);
	ASSERT_EQ(pool_mark_activated(self->p, m.id), 0);
	EXPECT_EQ(wait_ready(self->p, 1), 1);
	inst_stop(in);
	pool_free(self->p);
	self->p = NULL;

	/* a half-made instance and a second activated one, as a crash leaves them */
	snprintf(path, sizeof(path), "%s/instances/0000000000000-dead.tmp", self->dir);
	ASSERT_EQ(mkdir(path, 0700), 0);
	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, self->ca_key, 1, &self->p), 0);
	snprintf(path, sizeof(path), "%s/instances", self->dir);
	EXPECT_EQ(count_entries(path, ".tmp"), 0);
	/* the active one resumes, and it is not handed out as ready */
	ASSERT_EQ(pool_resume(self->p, m.id, &in, &m2), 0);
	EXPECT_STREQ(m2.id, m.id);
	EXPECT_TRUE(inst_is_started(in));
	ASSERT_EQ(pool_take(self->p, 30000, &spare, &ms), 0);
	EXPECT_NE(strcmp(ms.id, m.id), 0);
	inst_stop(spare);
	inst_stop(in);
	meta_clear(&ms);
	meta_clear(&m);
	meta_clear(&m2);
}

TEST_F_TIMEOUT(pool, resize_grows_and_shrinks, 180)
{
	struct pool_config c;
	char path[256];

	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, self->ca_key, 1, &self->p), 0);
	EXPECT_EQ(wait_ready(self->p, 1), 1);
	pool_set_size(self->p, 4);
	EXPECT_EQ(pool_size(self->p), 4);
	EXPECT_EQ(wait_ready(self->p, 4), 4);
	pool_set_size(self->p, 2);
	usleep(600 * 1000);
	EXPECT_EQ(pool_ready_count(self->p), 2);
	/* the extra ones went to retired/ and are wiped after the grace period */
	usleep(800 * 1000);
	snprintf(path, sizeof(path), "%s/retired", self->dir);
	EXPECT_EQ(count_entries(path, NULL), 0);
}

TEST_F_TIMEOUT(pool, manufacturing_failure_backs_off_and_leaves_nothing, 60)
{
	struct pool_config c;
	struct inst *in;
	struct meta m;
	char path[256];

	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, "/nonexistent/ca.key", 2, &self->p), 0);
	usleep(1500 * 1000);
	EXPECT_EQ(pool_ready_count(self->p), 0);
	/* a long wait ends early once manufacturing has failed a few times in a row */
	EXPECT_EQ(pool_take(self->p, 30000, &in, &m), -EIO);
	snprintf(path, sizeof(path), "%s/instances", self->dir);
	EXPECT_EQ(count_entries(path, NULL), 0);
}

TEST_F_TIMEOUT(pool, resume_rejects_bad_ids, 30)
{
	struct pool_config c;
	struct inst *in;
	struct meta m;
	char path[256];
	char id[META_ID_MAX];

	ASSERT_EQ(open_pool(&c, self->dir, self->ca_cert, self->ca_key, 1, &self->p), 0);
	EXPECT_EQ(pool_resume(self->p, "../../etc", &in, &m), -EINVAL);
	EXPECT_EQ(pool_resume(self->p, "00000000-ffff", &in, &m), -ENOENT);
	snprintf(path, sizeof(path), "%s/active", self->dir);
	ASSERT_EQ(fsutil_write_atomic(path, "../x\n", 5, 0600), 0);
	EXPECT_EQ(pool_active_load(self->p, id, sizeof(id)), -EINVAL);
}

TEST_HARNESS_MAIN
