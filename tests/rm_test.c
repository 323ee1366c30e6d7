/*
 * The resource-managed endpoint <mount>/tpmrm0 against the real daemon:
 * raw command bytes on several opens at once, tpm2-tools, tpm2-abrmd on
 * tpm0, rotations with opens alive, and the context counter driven past
 * its gap.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "cmdbuild.h"
#include "daemon_util.h"

#define AK "0x81008000"
#define AK_HANDLE_VALUE 0x81008000u
#define RC_RM 0x000b0000u		/* the kernel's resource-manager layer */
/* TPM2_TRANSIENT_FIRST, whose tss2 definition shifts a signed int too far */
#define TRANSIENT_FIRST 0x80000000u
#define RC_HANDLE_H1 (TPM2_RC_HANDLE | TPM2_RC_1)
#define RC_HANDLE_P1 (TPM2_RC_HANDLE | TPM2_RC_P | TPM2_RC_1)

FIXTURE(rm) {
	struct vd d;
	char rm[320];
};

FIXTURE_SETUP(rm)
{
	const char *why = vd_unsupported();

	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
	snprintf(self->rm, sizeof(self->rm), "%s/tpmrm0", self->d.mnt);
}

FIXTURE_TEARDOWN(rm)
{
	if (self->d.pid > 0 && getenv("VTPMD_TEST_VERBOSE"))
		vd_sh("grep -v 'mux: command' '%s' | tail -n 40", self->d.log);
	vd_cleanup(&self->d);
}

static void start(struct vd *d, const char *extra)
{
	ASSERT_EQ(vd_write_conf(d, NULL, extra), 0);
	if (vd_start(d) != 0) {
		vd_sh("cat '%s'", d->log);
		ASSERT_TRUE(false);
	}
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}


/* Write cmd, wait for the answer, read it; returns the response length or -errno. */
static ssize_t xfer(int fd, const uint8_t *cmd, size_t len, uint8_t *rsp, size_t size)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (write(fd, cmd, len) != (ssize_t)len)
		return -errno;
	if (poll(&p, 1, 20000) != 1)
		return -ETIMEDOUT;
	if (p.revents != POLLIN)
		return -EPROTO;

	return read(fd, rsp, size);
}

/* Send c; the response code, or 0xffffffff when the transport failed. */
static uint32_t run(int fd, struct cmd *c, uint8_t *rsp, size_t size, size_t *ret_len)
{
	ssize_t n;

	n = xfer(fd, c->b, cmd_end(c), rsp, size);
	if (n < 10) {
		TEST_LOG("transport failed: %zd", n);
		return 0xffffffffu;
	}
	if (ret_len)
		*ret_len = (size_t)n;

	return (uint32_t)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9];
}

static uint32_t rsp_handle(const uint8_t *rsp)
{
	return (uint32_t)rsp[10] << 24 | rsp[11] << 16 | rsp[12] << 8 | rsp[13];
}

/* CreatePrimary of an ECC P-256 signing key under the owner hierarchy. */
static uint32_t create_primary(int fd, uint32_t *ret_handle)
{
	TPM2B_PUBLIC pub = { .publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH |
				    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				    TPMA_OBJECT_SENSITIVEDATAORIGIN,
		.parameters.eccDetail = {
			.symmetric.algorithm = TPM2_ALG_NULL,
			.scheme = { .scheme = TPM2_ALG_ECDSA,
				    .details.ecdsa.hashAlg = TPM2_ALG_SHA256 },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf.scheme = TPM2_ALG_NULL,
		},
	} };
	TPM2B_SENSITIVE_CREATE sens = {0};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	uint32_t h = TPM2_RH_OWNER;
	uint8_t rsp[4096];
	struct cmd c;
	uint32_t rc;

	cmd_begin(&c, true, TPM2_CC_CreatePrimary, &h, 1);
	Tss2_MU_TPM2B_SENSITIVE_CREATE_Marshal(&sens, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPM2B_DATA_Marshal(&outside, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPML_PCR_SELECTION_Marshal(&pcrs, c.b, sizeof(c.b), &c.off);
	rc = run(fd, &c, rsp, sizeof(rsp), NULL);
	if (rc == TPM2_RC_SUCCESS && ret_handle)
		*ret_handle = rsp_handle(rsp);

	return rc;
}

/* An unbound, unsalted HMAC session with SHA-256. */
static uint32_t start_session(int fd, uint32_t *ret_handle)
{
	uint32_t h[2] = { TPM2_RH_NULL, TPM2_RH_NULL };
	TPM2B_NONCE nonce = { .size = 16 };
	TPM2B_ENCRYPTED_SECRET salt = {0};
	TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_NULL };
	uint8_t rsp[256];
	struct cmd c;
	uint32_t rc;

	cmd_begin(&c, false, TPM2_CC_StartAuthSession, h, 2);
	Tss2_MU_TPM2B_NONCE_Marshal(&nonce, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&salt, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT8_Marshal(TPM2_SE_HMAC, c.b, sizeof(c.b), &c.off);
	Tss2_MU_TPMT_SYM_DEF_Marshal(&sym, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT16_Marshal(TPM2_ALG_SHA256, c.b, sizeof(c.b), &c.off);
	rc = run(fd, &c, rsp, sizeof(rsp), NULL);
	if (rc == TPM2_RC_SUCCESS && ret_handle)
		*ret_handle = rsp_handle(rsp);

	return rc;
}

static uint32_t read_public(int fd, uint32_t handle)
{
	uint8_t rsp[1024];
	struct cmd c;

	cmd_begin(&c, false, TPM2_CC_ReadPublic, &handle, 1);
	return run(fd, &c, rsp, sizeof(rsp), NULL);
}

static uint32_t flush(int fd, uint32_t handle)
{
	uint8_t rsp[64];
	struct cmd c;

	cmd_begin(&c, false, TPM2_CC_FlushContext, NULL, 0);
	Tss2_MU_UINT32_Marshal(handle, c.b, sizeof(c.b), &c.off);
	return run(fd, &c, rsp, sizeof(rsp), NULL);
}

static uint32_t get_random(int fd)
{
	uint8_t rsp[64];
	struct cmd c;

	cmd_begin(&c, false, TPM2_CC_GetRandom, NULL, 0);
	Tss2_MU_UINT16_Marshal(8, c.b, sizeof(c.b), &c.off);
	return run(fd, &c, rsp, sizeof(rsp), NULL);
}

/* ContextSave into blob (the marshalled TPMS_CONTEXT); *ret_seq its sequence. */
static uint32_t context_save(int fd, uint32_t handle, uint8_t *blob, size_t *ret_len,
			     uint64_t *ret_seq)
{
	uint8_t rsp[4096];
	struct cmd c;
	size_t len = 0;
	uint32_t rc;

	cmd_begin(&c, false, TPM2_CC_ContextSave, &handle, 1);
	rc = run(fd, &c, rsp, sizeof(rsp), &len);
	if (rc != TPM2_RC_SUCCESS)
		return rc;
	memcpy(blob, rsp + 10, len - 10);
	*ret_len = len - 10;
	if (ret_seq)
		*ret_seq = (uint64_t)rsp_handle(rsp) << 32 | rsp_handle(rsp + 4);

	return rc;
}

static uint32_t context_load(int fd, const uint8_t *blob, size_t len, uint32_t *ret_handle)
{
	uint8_t rsp[64];
	struct cmd c;
	uint32_t rc;

	cmd_begin(&c, false, TPM2_CC_ContextLoad, NULL, 0);
	memcpy(c.b + c.off, blob, len);
	c.off += len;
	rc = run(fd, &c, rsp, sizeof(rsp), NULL);
	if (rc == TPM2_RC_SUCCESS)
		*ret_handle = rsp_handle(rsp);

	return rc;
}

/* GetCapability(TPM_CAP_HANDLES) from first: the count, or -1. */
static int handles(int fd, uint32_t first, uint32_t *list, size_t max)
{
	TPMS_CAPABILITY_DATA cap;
	uint8_t rsp[4096];
	struct cmd c;
	size_t len = 0;
	size_t off = 11;
	uint32_t i;

	cmd_begin(&c, false, TPM2_CC_GetCapability, NULL, 0);
	Tss2_MU_UINT32_Marshal(TPM2_CAP_HANDLES, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT32_Marshal(first, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT32_Marshal(64, c.b, sizeof(c.b), &c.off);
	if (run(fd, &c, rsp, sizeof(rsp), &len) != TPM2_RC_SUCCESS)
		return -1;
	if (Tss2_MU_TPMS_CAPABILITY_DATA_Unmarshal(rsp, len, &off, &cap) != TSS2_RC_SUCCESS)
		return -1;
	for (i = 0; i < cap.data.handles.count && i < max; i++)
		list[i] = cap.data.handles.handle[i];

	return (int)cap.data.handles.count;
}

static int open_rm(struct harness_fx_rm *self)
{
	return open(self->rm, O_RDWR | O_NONBLOCK);
}

/* ---- tests ---- */

TEST_F_TIMEOUT(rm, opens_have_their_own_handles, 60)
{
	uint8_t blob[4096];
	size_t len;
	uint32_t list[8];
	uint32_t va;
	uint32_t vb;
	uint32_t sa;
	int a;
	int b;
	int t;

	start(&self->d, NULL);
	a = open_rm(self);
	b = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	ASSERT_EQ(create_primary(a, &va), TPM2_RC_SUCCESS);
	ASSERT_EQ(create_primary(b, &vb), TPM2_RC_SUCCESS);
	EXPECT_EQ(va >> 24, TPM2_HT_TRANSIENT);
	TEST_LOG("virtual handles: a=0x%x b=0x%x", va, vb);
	EXPECT_EQ(read_public(a, va), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(b, vb), TPM2_RC_SUCCESS);
	/* b cannot reach a's object, even by guessing its number */
	EXPECT_EQ(read_public(b, va + 1), RC_HANDLE_H1);
	EXPECT_EQ(read_public(a, 0x80000000), RC_HANDLE_H1);
	EXPECT_EQ(handles(a, TRANSIENT_FIRST, list, 8), 1);
	EXPECT_EQ(list[0], va);
	ASSERT_EQ(start_session(a, &sa), TPM2_RC_SUCCESS);
	EXPECT_EQ(handles(a, TPM2_LOADED_SESSION_FIRST, list, 8), 1);
	EXPECT_EQ(handles(b, TPM2_LOADED_SESSION_FIRST, list, 8), 0);
	EXPECT_EQ(flush(b, sa), RC_HANDLE_P1);
	EXPECT_EQ(read_public(b, sa), RC_HANDLE_H1);
	/* nor load a session context that a saved, even holding its bytes */
	ASSERT_EQ(context_save(a, sa, blob, &len, NULL), TPM2_RC_SUCCESS);
	EXPECT_EQ(context_load(b, blob, len, &vb), RC_HANDLE_P1);
	EXPECT_EQ(context_load(a, blob, len, &sa), TPM2_RC_SUCCESS);
	/* between commands the instance holds nothing loaded of either */
	t = open(self->d.tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(t, 0);
	EXPECT_EQ(handles(t, TRANSIENT_FIRST, list, 8), 0);
	EXPECT_EQ(handles(t, TPM2_ACTIVE_SESSION_FIRST, list, 8), 1);
	/* tpm0 and tpmrm0 together: interleaved commands all answer */
	EXPECT_EQ(get_random(t), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, va), TPM2_RC_SUCCESS);
	EXPECT_EQ(get_random(t), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, sa), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, sa), RC_HANDLE_P1);
	EXPECT_EQ(handles(t, TPM2_ACTIVE_SESSION_FIRST, list, 8), 0);
	close(t);
	close(a);
	close(b);
}

TEST_F_TIMEOUT(rm, context_save_load_flush_on_virtual_handles, 60)
{
	uint8_t blob[4096];
	uint8_t sblob[4096];
	uint32_t list[8];
	size_t len;
	size_t slen;
	uint32_t v;
	uint32_t v2;
	uint32_t s;
	uint32_t s2;
	int a;

	start(&self->d, NULL);
	a = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_EQ(create_primary(a, &v), TPM2_RC_SUCCESS);
	ASSERT_EQ(context_save(a, v, blob, &len, NULL), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, v), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, v), RC_HANDLE_H1);
	ASSERT_EQ(context_load(a, blob, len, &v2), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, v2), TPM2_RC_SUCCESS);
	/* an object context loads again and again, each time a new handle */
	ASSERT_EQ(context_load(a, blob, len, &v), TPM2_RC_SUCCESS);
	EXPECT_NE(v, v2);
	EXPECT_EQ(handles(a, TRANSIENT_FIRST, list, 8), 2);

	/* a session saved by the client is the client's until it loads it back */
	ASSERT_EQ(start_session(a, &s), TPM2_RC_SUCCESS);
	ASSERT_EQ(context_save(a, s, sblob, &slen, NULL), TPM2_RC_SUCCESS);
	EXPECT_EQ(handles(a, TPM2_ACTIVE_SESSION_FIRST, list, 8), 1);
	EXPECT_EQ(handles(a, TPM2_LOADED_SESSION_FIRST, list, 8), 0);
	ASSERT_EQ(context_load(a, sblob, slen, &s2), TPM2_RC_SUCCESS);
	EXPECT_EQ(s2, s);
	EXPECT_EQ(handles(a, TPM2_LOADED_SESSION_FIRST, list, 8), 1);
	EXPECT_EQ(flush(a, s), TPM2_RC_SUCCESS);
	EXPECT_EQ(handles(a, TPM2_LOADED_SESSION_FIRST, list, 8), 0);
	close(a);
}

TEST_F_TIMEOUT(rm, limits_and_malformed_commands_answer_in_tpm_format, 60)
{
	static const uint8_t unknown_cc[] = { 0x80, 0x01, 0, 0, 0, 10, 0x20, 0, 0xff, 0xff };
	static const uint8_t short_handles[] = { 0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x73 };
	uint8_t rsp[256];
	struct cmd c;
	uint32_t h[3];
	uint32_t s[3];
	uint32_t owner = TPM2_RH_OWNER;
	int fds[2];
	int a;

	start(&self->d, "[rm]\nmax_objects = 2\nmax_sessions = 2\nmax_opens = 2\n");
	a = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_EQ(create_primary(a, &h[0]), TPM2_RC_SUCCESS);
	ASSERT_EQ(create_primary(a, &h[1]), TPM2_RC_SUCCESS);
	EXPECT_EQ(create_primary(a, &h[2]), RC_RM | TPM2_RC_OBJECT_MEMORY);
	ASSERT_EQ(start_session(a, &s[0]), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(a, &s[1]), TPM2_RC_SUCCESS);
	EXPECT_EQ(start_session(a, &s[2]), RC_RM | TPM2_RC_SESSION_MEMORY);

	EXPECT_EQ(xfer(a, unknown_cc, sizeof(unknown_cc), rsp, sizeof(rsp)), 10);
	EXPECT_EQ((uint32_t)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9],
		  RC_RM | TPM2_RC_COMMAND_CODE);
	EXPECT_EQ(xfer(a, short_handles, sizeof(short_handles), rsp, sizeof(rsp)), 10);
	EXPECT_EQ((uint32_t)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9],
		  RC_RM | TPM2_RC_COMMAND_SIZE);
	/* an authorization area whose size runs past the command */
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[17] = 0x7f;
	EXPECT_EQ(run(a, &c, rsp, sizeof(rsp), NULL), RC_RM | TPM2_RC_AUTHSIZE);
	/* a session entry that claims more nonce than the area holds */
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[22] = 0x40;
	EXPECT_EQ(run(a, &c, rsp, sizeof(rsp), NULL), RC_RM | TPM2_RC_AUTHSIZE);
	/* a FlushContext with bytes after its handle */
	cmd_begin(&c, false, TPM2_CC_FlushContext, NULL, 0);
	Tss2_MU_UINT32_Marshal(s[0], c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT16_Marshal(0, c.b, sizeof(c.b), &c.off);
	EXPECT_EQ(run(a, &c, rsp, sizeof(rsp), NULL), RC_RM | TPM2_RC_COMMAND_SIZE);
	/* a session handle in the authorization area that is not ours */
	cmd_begin(&c, true, TPM2_CC_HierarchyChangeAuth, &owner, 1);
	c.b[18] = 0x02;
	c.b[21] = 0x3f;
	EXPECT_EQ(run(a, &c, rsp, sizeof(rsp), NULL), TPM2_RC_HANDLE | TPM2_RC_S | TPM2_RC_1);

	/* one open more than [rm] max_opens fails; a close makes room */
	fds[0] = open_rm(self);
	EXPECT_GE(fds[0], 0);
	fds[1] = open_rm(self);
	EXPECT_EQ(fds[1], -1);
	EXPECT_EQ(errno, EMFILE);
	close(fds[0]);
	for (int i = 0; i < 50 && (fds[1] = open_rm(self)) < 0; i++)
		vd_sleep_ms(20);
	EXPECT_GE(fds[1], 0);
	close(fds[1]);

	/* nothing was lost: the open goes on, with what it holds */
	EXPECT_EQ(get_random(a), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, h[0]), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, h[1]), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, h[1]), TPM2_RC_SUCCESS);
	EXPECT_EQ(create_primary(a, &h[2]), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, s[1]), TPM2_RC_SUCCESS);
	EXPECT_EQ(start_session(a, &s[2]), TPM2_RC_SUCCESS);
	close(a);
}

struct hammer {
	int fd;
	uint32_t handle;
	volatile bool *stop;
	long done;
	long failed;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;

	while (!*h->stop) {
		if (read_public(h->fd, h->handle) == TPM2_RC_SUCCESS)
			h->done++;
		else
			h->failed++;
	}

	return NULL;
}

/*
 * Four opens send commands as fast as they can; a fifth one's commands
 * still wait for at most a few of theirs, and the four share the instance
 * evenly.
 */
TEST_F_TIMEOUT(rm, opens_are_served_fairly, 60)
{
	struct hammer h[4];
	pthread_t th[4];
	volatile bool stop = false;
	uint64_t worst = 0;
	uint64_t t0;
	long least = -1;
	long most = 0;
	int quiet;
	int i;

	start(&self->d, NULL);
	for (i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .fd = open_rm(self), .stop = &stop };
		ASSERT_GE(h[i].fd, 0);
		ASSERT_EQ(create_primary(h[i].fd, &h[i].handle), TPM2_RC_SUCCESS);
	}
	quiet = open_rm(self);
	ASSERT_GE(quiet, 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
	for (i = 0; i < 200; i++) {
		t0 = now_us();
		EXPECT_EQ(get_random(quiet), TPM2_RC_SUCCESS);
		if (now_us() - t0 > worst)
			worst = now_us() - t0;
		vd_sleep_ms(5);
	}
	stop = true;
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(h[i].failed, 0);
		least = least < 0 || h[i].done < least ? h[i].done : least;
		most = h[i].done > most ? h[i].done : most;
		close(h[i].fd);
	}
	TEST_LOG("commands per busy open: %ld..%ld; quiet open's worst wait %llu us",
		 least, most, (unsigned long long)worst);
	EXPECT_GT(least, 100);
	EXPECT_LT(most, least * 2);
	EXPECT_LT(worst, 100000);
	close(quiet);
}

/*
 * GetCapability(HANDLES) with a session in its authorization area reaches
 * the TPM, which judges the session (here: an HMAC that cannot be right),
 * rather than a resource-manager refusal.
 */
TEST_F_TIMEOUT(rm, getcap_handles_with_a_session_reaches_the_tpm, 60)
{
	uint8_t rsp[256];
	struct cmd c;
	uint32_t s;
	uint32_t rc;
	int a;

	TEST_XFAIL("tpmrm0 refuses GetCapability(HANDLES) with a session (README, Known gaps)");
	start(&self->d, NULL);
	a = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_EQ(start_session(a, &s), TPM2_RC_SUCCESS);
	cmd_begin(&c, false, TPM2_CC_GetCapability, NULL, 0);
	c.b[1] = TPM2_ST_SESSIONS & 0xff;
	/* one session: handle, empty nonce, audit|continueSession, 32-byte hmac */
	Tss2_MU_UINT32_Marshal(4 + 2 + 1 + 2 + 32, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT32_Marshal(s, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT16_Marshal(0, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT8_Marshal(TPMA_SESSION_AUDIT | TPMA_SESSION_CONTINUESESSION, c.b,
			      sizeof(c.b), &c.off);
	Tss2_MU_UINT16_Marshal(32, c.b, sizeof(c.b), &c.off);
	memset(c.b + c.off, 0x5a, 32);
	c.off += 32;
	Tss2_MU_UINT32_Marshal(TPM2_CAP_HANDLES, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT32_Marshal(TRANSIENT_FIRST, c.b, sizeof(c.b), &c.off);
	Tss2_MU_UINT32_Marshal(8, c.b, sizeof(c.b), &c.off);
	rc = run(a, &c, rsp, sizeof(rsp), NULL);
	TEST_LOG("rc=0x%x", rc);
	EXPECT_NE(rc & 0xff0000, RC_RM);
	close(a);
}

/* A client that is killed holding an object and a session leaves nothing. */
TEST_F_TIMEOUT(rm, close_and_sigkill_flush_what_the_open_held, 60)
{
	uint32_t list[8];
	int ready[2];
	pid_t pid;
	char c;
	int t;
	int a;

	start(&self->d, NULL);
	a = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_EQ(create_primary(a, NULL), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(a, NULL), TPM2_RC_SUCCESS);
	close(a);

	ASSERT_EQ(pipe(ready), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		int fd = open_rm(self);

		if (fd < 0 || create_primary(fd, NULL) || start_session(fd, NULL) ||
		    start_session(fd, NULL))
			_exit(1);
		(void)write(ready[1], "r", 1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	ASSERT_EQ(read(ready[0], &c, 1), 1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);

	t = -1;
	for (int i = 0; i < 100 && t < 0; i++) {
		t = open(self->d.tpm0, O_RDWR | O_NONBLOCK);
		if (t < 0)
			vd_sleep_ms(20);
	}
	ASSERT_GE(t, 0);
	/* the flush runs on the mux thread after the release: poll for it */
	for (int i = 0; i < 100 && handles(t, TPM2_ACTIVE_SESSION_FIRST, list, 8) != 0; i++)
		vd_sleep_ms(20);
	EXPECT_EQ(handles(t, TPM2_ACTIVE_SESSION_FIRST, list, 8), 0);
	EXPECT_EQ(handles(t, TRANSIENT_FIRST, list, 8), 0);
	close(t);
}

/* A daemon stopped under open tpmrm0 files keeps none of their sessions. */
TEST_F_TIMEOUT(rm, stop_flushes_what_open_files_hold, 60)
{
	uint32_t list[8];
	int a;
	int t;

	start(&self->d, NULL);
	a = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_EQ(start_session(a, NULL), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(a, NULL), TPM2_RC_SUCCESS);
	EXPECT_EQ(vd_stop(&self->d, SIGTERM), 0);
	close(a);
	ASSERT_EQ(vd_start(&self->d), 0);
	t = open(self->d.tpm0, O_RDWR | O_NONBLOCK);
	ASSERT_GE(t, 0);
	EXPECT_EQ(handles(t, TPM2_ACTIVE_SESSION_FIRST, list, 8), 0);
	close(t);
}

TEST_F_TIMEOUT(rm, rotation_gives_handle_errors_to_opens_that_held_handles, 120)
{
	uint32_t v;
	uint32_t s;
	uint32_t v2;
	int a;
	int b;

	start(&self->d, NULL);
	a = open_rm(self);
	b = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	ASSERT_EQ(create_primary(a, &v), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(a, &s), TPM2_RC_SUCCESS);
	EXPECT_EQ(get_random(b), TPM2_RC_SUCCESS);
	kill(self->d.pid, SIGUSR1);
	ASSERT_EQ(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_EQ(read_public(a, v), RC_HANDLE_H1);
	EXPECT_EQ(flush(a, s), RC_HANDLE_P1);
	EXPECT_EQ(flush(a, v), RC_HANDLE_P1);
	/* b held nothing and notices nothing; a goes on with new handles */
	EXPECT_EQ(get_random(b), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(b, AK_HANDLE_VALUE), TPM2_RC_SUCCESS);
	ASSERT_EQ(create_primary(a, &v2), TPM2_RC_SUCCESS);
	EXPECT_NE(v2, v);
	EXPECT_EQ(read_public(a, v2), TPM2_RC_SUCCESS);
	EXPECT_EQ(read_public(a, v), RC_HANDLE_H1);
	close(a);
	close(b);
}

/*
 * Two sessions stay saved while more than 65,535 other context saves go
 * by, one by the resource manager and one by its client: libtpms would
 * answer TPM_RC_CONTEXT_GAP (its counter gap is 16 bits) unless the
 * resource manager saves the old ones again in time, and gives the client
 * the newer context when it loads its own.
 */
TEST_F_TIMEOUT(rm, context_gap_never_reaches_the_client, 240)
{
	uint8_t blob[4096];
	uint8_t mine[4096];
	size_t mine_len;
	uint32_t held;
	uint64_t first_seq = 0;
	uint64_t seq = 0;
	uint32_t kept;
	uint32_t s;
	uint32_t rc = 0;
	size_t len;
	long failed = 0;
	long i;
	int a;
	int b;

	start(&self->d, NULL);
	a = open_rm(self);
	b = open_rm(self);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	ASSERT_EQ(start_session(a, &kept), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(a, &held), TPM2_RC_SUCCESS);
	ASSERT_EQ(context_save(a, held, mine, &mine_len, NULL), TPM2_RC_SUCCESS);
	ASSERT_EQ(start_session(b, &s), TPM2_RC_SUCCESS);
	for (i = 0; i < 36000 && failed < 5; i++) {
		rc = context_save(b, s, blob, &len, &seq);
		if (rc == TPM2_RC_SUCCESS)
			rc = context_load(b, blob, len, &s);
		if (i == 0)
			first_seq = seq;
		if (rc != TPM2_RC_SUCCESS) {
			TEST_LOG("round %ld: rc=0x%x", i, rc);
			failed++;
		}
	}
	TEST_LOG("context saves: %llu", (unsigned long long)(seq - first_seq));
	EXPECT_EQ(failed, 0);
	EXPECT_GT(seq - first_seq, 70000);
	/* the kept session is still there and still a's */
	EXPECT_EQ(context_save(a, kept, blob, &len, NULL), TPM2_RC_SUCCESS);
	EXPECT_EQ(context_load(a, blob, len, &s), TPM2_RC_SUCCESS);
	EXPECT_EQ(flush(a, kept), TPM2_RC_SUCCESS);
	EXPECT_EQ(context_load(a, mine, mine_len, &s), TPM2_RC_SUCCESS);
	EXPECT_EQ(s, held);
	EXPECT_EQ(flush(a, held), TPM2_RC_SUCCESS);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
	close(a);
	close(b);
}

/* Done-when: eight tpm2-tools agents at once, each with its own EK and AK. */
TEST_F_TIMEOUT(rm, eight_tool_agents_verify_every_quote, 600)
{
	int r;

	start(&self->d, NULL);
	r = vd_sh("export TPM2TOOLS_TCTI=device:%s; dir=%s; "
		  "agent() { local w=$dir/agent$1 ok=0 i n; mkdir -p $w; "
		  "  tpm2_createek -Q -G ecc -c $w/ek.ctx -u $w/ek.pub || return 1; "
		  "  tpm2_createak -Q -C $w/ek.ctx -c $w/ak.ctx -G ecc -g sha256 -s ecdsa "
		  "    -u $w/ak.pub -f pem -n $w/ak.name || return 1; "
		  "  for i in $(seq 100); do n=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \\n'); "
		  "    tpm2_startauthsession --hmac-session -S $w/leak$i.ctx 2>/dev/null && "
		  "    tpm2_quote -Q -c $w/ak.ctx -l sha256:0,1,2 -q $n -m $w/m -s $w/s -o $w/p -g sha256 && "
		  "    tpm2_checkquote -Q -u $w/ak.pub -m $w/m -s $w/s -f $w/p -g sha256 -q $n && "
		  "    ok=$((ok + 1)); done; echo \"agent $1: $ok of 100 verified\"; "
		  "  [ $ok = 100 ]; }; "
		  "pids=; for a in 1 2 3 4 5 6 7 8; do agent $a & pids=\"$pids $!\"; done; "
		  "fail=0; for p in $pids; do wait $p || fail=1; done; exit $fail",
		  self->rm, self->d.dir);
	EXPECT_EQ(r, 0);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

/* Done-when: transient objects left by 1,000 runs never fill the TPM. */
TEST_F_TIMEOUT(rm, thousand_createprimary_without_flush, 600)
{
	start(&self->d, "[rotate]\non_exhaustion = no\n");
	EXPECT_EQ(vd_sh("export TPM2TOOLS_TCTI=device:%s; n=0; for i in $(seq 1000); do "
			"tpm2_createprimary -Q -C o -G ecc && n=$((n + 1)); done; "
			"echo \"createprimary: $n of 1000\"; [ $n = 1000 ]", self->rm), 0);
	/* the last release's flush may still be on its way */
	EXPECT_EQ(vd_sh("for i in $(seq 50); do test -z \"$(TPM2TOOLS_TCTI=device:%s "
			"tpm2_getcap handles-transient)\" && exit 0; sleep 0.05; done; exit 1",
			self->d.tpm0), 0);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
}

/* Done-when: tpm2-abrmd on tpm0 is one client like any other. */
TEST_F_TIMEOUT(rm, tpm2_abrmd_on_tpm0_serves_tpm2_tools, 120)
{
	if (system("command -v tpm2-abrmd >/dev/null && command -v dbus-daemon >/dev/null") != 0)
		TEST_SKIP("tpm2-abrmd or dbus-daemon is not installed");
	start(&self->d, NULL);
	EXPECT_EQ(vd_sh("set -e; dir=%s; "
			"dbus-daemon --session --fork --print-address=3 --print-pid=4 "
			"  3>$dir/bus 4>$dir/bus.pid; "
			"export DBUS_SESSION_BUS_ADDRESS=$(cat $dir/bus); "
			"tpm2-abrmd --session --allow-root --tcti=device:%s & abrmd=$!; "
			"trap 'kill $abrmd; kill $(cat $dir/bus.pid)' EXIT; "
			"export TPM2TOOLS_TCTI=tabrmd:bus_type=session; "
			"for i in $(seq 100); do tpm2_getrandom 4 >/dev/null 2>&1 && break; sleep 0.05; done; "
			"tpm2_getrandom --hex 8; echo; "
			"tpm2_createprimary -Q -C o -G ecc -c $dir/p.ctx; "
			"tpm2_create -Q -C $dir/p.ctx -G ecc -u $dir/k.pub -r $dir/k.priv; "
			"tpm2_readpublic -c " AK " >/dev/null; "
			"tpm2_startauthsession -S $dir/s.ctx; "
			"tpm2_quote -Q -c " AK " -l sha256:0 -q 00 -m $dir/m -s $dir/s -o $dir/p",
			self->d.dir, self->d.tpm0), 0);
}

/*
 * Health rotation still happens when a tpm0 client leaks sessions while
 * tpmrm0 clients work: they hold no handles across commands (tpm2_quote
 * would: it authorises with a session of its own), so they notice
 * nothing.  The raw tpm0 client may lose the session it is saving when a
 * swap falls between its StartAuthSession and ContextSave.
 */
TEST_F_TIMEOUT(rm, tpm0_leaks_rotate_while_tpmrm0_clients_run, 300)
{
	int r;

	start(&self->d, "[rotate]\nsession_watermark = 8\n");
	r = vd_sh("dir=%s; rm_client() { local n=0 i; for i in $(seq 100); do "
		  "  TPM2TOOLS_TCTI=device:%s tpm2_getrandom 8 >/dev/null && "
		  "  TPM2TOOLS_TCTI=device:%s tpm2_readpublic -c " AK " >/dev/null && "
		  "  TPM2TOOLS_TCTI=device:%s tpm2_pcrread sha256:0 >/dev/null && n=$((n + 1)); "
		  "  sleep 0.02; done; echo \"rm client $1: $n of 100\"; [ $n = 100 ]; }; "
		  "rm_client 1 & p1=$!; rm_client 2 & p2=$!; n=0; "
		  "for i in $(seq 70); do TPM2TOOLS_TCTI=device:%s "
		  "  tpm2_startauthsession -S $dir/leak$i.ctx && n=$((n + 1)); done; "
		  "echo \"tpm0 leaks: $n of 70\"; "
		  "wait $p1; b=$?; wait $p2; c=$?; [ $n -ge 66 ] && exit $((b | c))",
		  self->d.dir, self->rm, self->rm, self->rm, self->d.tpm0);
	EXPECT_EQ(r, 0);
	EXPECT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_EQ(vd_sh("grep -q 'rotate: swapped.*reason=session_watermark' %s", self->d.log), 0);
}

/* The [rm] keys are checked like every other: a bad value names its line. */
TEST(check_mode_rejects_bad_rm_limits)
{
	char dir[] = "/tmp/vtpmd-rmconf.XXXXXX";
	const char *bin = getenv("VTPMD_BIN");
	static const char *const bad[] = {
		"max_objects = 0", "max_sessions = 65", "max_pending = 1k", "max_opens = -1",
		"max_objects = many", "max_flush = 1",
	};
	size_t i;

	if (!bin)
		TEST_SKIP("VTPMD_BIN not set (run through meson)");
	ASSERT_NE_NULL(mkdtemp(dir));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_EQ(vd_sh("printf '[vtpmd]\\nstate_dir = /nonexistent/s\\nmountpoint = /nonexistent/m\\n"
				"[rm]\\n%s\\n' > %s/bad.conf; %s -n -c %s/bad.conf 2>%s/err; "
				"test $? = 1 && grep -q '^%s/bad.conf:5: ' %s/err",
				bad[i], dir, bin, dir, dir, dir, dir), 0);
	EXPECT_EQ(vd_sh("printf '[vtpmd]\\nstate_dir = /nonexistent/s\\nmountpoint = /nonexistent/m\\n' > %s/ok.conf; "
			"%s -n -c %s/ok.conf > %s/out && grep -q '^max_objects = 16' %s/out && "
			"grep -q '^max_pending = 64k' %s/out && grep -q '^max_opens = 256' %s/out",
			dir, bin, dir, dir, dir, dir, dir), 0);
	vd_sh("rm -rf %s", dir);
}

TEST_HARNESS_MAIN
