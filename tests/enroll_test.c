/*
 * Re-enrollment end to end: the real daemon, its outbox and hooks against
 * a loopback HTTPS stand-in for Keylime's registrar and verifier (or a
 * webhook sink), started by the fixture from tests/helpers.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"

#define UUID "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"

FIXTURE(enroll) {
	struct vd d;
	char pki[400];		/* CA, server and client certificates */
	char stub[400];		/* the stub's port files, calls.log, control.json */
	pid_t stub_pid;
	pid_t hang_pid;		/* a server that never answers */
};

/* CA, a server certificate for 127.0.0.1 and a client certificate, with openssl. */
static int make_pki(const char *dir)
{
	return vd_sh("set -e; cd '%s'; "
		     "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		     "-keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null; "
		     "for n in server client; do "
		     "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key "
		     "-out $n.csr -subj /CN=$n 2>/dev/null; done; "
		     "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext; "
		     "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		     "-out server.pem -days 2 -extfile san.ext 2>/dev/null; "
		     "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		     "-out client.pem -days 2 2>/dev/null; chmod 600 *.key",
		     dir);
}

FIXTURE_SETUP(enroll)
{
	const char *why = vd_unsupported();

	if (why)
		TEST_SKIP("%s", why);
	ASSERT_EQ(vd_init(&self->d), 0);
	snprintf(self->pki, sizeof(self->pki), "%s/pki", self->d.dir);
	snprintf(self->stub, sizeof(self->stub), "%s/stub", self->d.dir);
	ASSERT_EQ(mkdir(self->pki, 0700), 0);
	ASSERT_EQ(mkdir(self->stub, 0700), 0);
	ASSERT_EQ(make_pki(self->pki), 0);
	self->stub_pid = -1;
	self->hang_pid = -1;
}

FIXTURE_TEARDOWN(enroll)
{
	if (getenv("VTPMD_TEST_VERBOSE")) {
		vd_sh("tail -n 60 '%s'", self->d.log);
		vd_sh("cat '%s/calls.log'", self->stub);
	}
	if (self->stub_pid > 0) {
		kill(self->stub_pid, SIGKILL);
		waitpid(self->stub_pid, NULL, 0);
	}
	if (self->hang_pid > 0) {
		kill(self->hang_pid, SIGKILL);
		waitpid(self->hang_pid, NULL, 0);
	}
	vd_cleanup(&self->d);
}

/* Start the stub in mode (keylime or sink); mtls: require a client certificate. */
static int stub_start(struct harness_fx_enroll *self, const char *mode, bool mtls)
{
	const char *src = getenv("VTPMD_SOURCE_ROOT");
	char script[400];
	char cert[450];
	char key[450];
	char ca[450];
	char status[400];
	char port[450];
	char *argv[14];
	int i;

	snprintf(script, sizeof(script), "%s/tests/helpers/keylime_stub.py", src ? src : ".");
	snprintf(cert, sizeof(cert), "%s/server.pem", self->pki);
	snprintf(key, sizeof(key), "%s/server.key", self->pki);
	snprintf(ca, sizeof(ca), "%s/ca.pem", self->pki);
	snprintf(status, sizeof(status), "%s/status", self->d.mnt);
	i = 0;
	argv[i++] = (char *)"/usr/bin/python3";
	argv[i++] = script;
	argv[i++] = self->stub;
	argv[i++] = (char *)mode;
	argv[i++] = (char *)"--cert";
	argv[i++] = cert;
	argv[i++] = (char *)"--key";
	argv[i++] = key;
	argv[i++] = (char *)"--status";
	argv[i++] = status;
	if (mtls) {
		argv[i++] = (char *)"--client-ca";
		argv[i++] = ca;
	}
	argv[i] = NULL;
	if (posix_spawn(&self->stub_pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -errno;
	snprintf(port, sizeof(port), "%s/%s.port", self->stub,
		 strcmp(mode, "sink") == 0 ? "sink" : "verifier");
	for (i = 0; i < 200; i++) {
		if (access(port, R_OK) == 0)
			return 0;
		vd_sleep_ms(50);
	}

	return -ETIMEDOUT;
}

static int stub_port(struct harness_fx_enroll *self, const char *name)
{
	char path[450];
	char buf[32];

	snprintf(path, sizeof(path), "%s/%s.port", self->stub, name);
	if (vd_read(path, buf, sizeof(buf)) <= 0)
		return -1;

	return atoi(buf);
}

/* Replace the stub's control file (scripted failures) with text. */
static int stub_control(struct harness_fx_enroll *self, const char *text)
{
	char path[450];
	char tmp[460];
	FILE *f;

	snprintf(path, sizeof(path), "%s/control.json", self->stub);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	if (fclose(f) != 0)
		return -errno;

	return rename(tmp, path) == 0 ? 0 : -errno;
}

/*
 * The calls the stub saw from line skip on, one word per call
 * ("verifier:DELETE:202"), consecutive repeats (polls) folded into one.
 */
static void stub_calls(struct harness_fx_enroll *self, int skip, char *buf, size_t size)
{
	char cmd[1200];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd),
		 "python3 -c 'import json,sys\n"
		 "out=[]\n"
		 "for l in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:\n"
		 "  c=json.loads(l); w=\"%%s:%%s:%%s\" %% (c[\"side\"],c[\"method\"],c[\"status\"])\n"
		 "  if c[\"path\"].endswith(\"/activate\"): w=\"agent:ACTIVATE:%%s\" %% c[\"status\"]\n"
		 "  if c[\"side\"]==\"registrar\" and c[\"method\"]==\"POST\" and w[0]==\"r\": w=\"agent:REGISTER:%%s\" %% c[\"status\"]\n"
		 "  if not out or out[-1]!=w: out.append(w)\n"
		 "print(\" \".join(out))' '%s/calls.log' %d 2>/dev/null",
		 self->stub, skip);
	buf[0] = '\0';
	p = popen(cmd, "r");
	if (!p)
		return;
	if (!fgets(buf, (int)size, p))
		buf[0] = '\0';
	pclose(p);
	n = strlen(buf);
	if (n && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
}

static int stub_lines(struct harness_fx_enroll *self)
{
	char cmd[500];
	char buf[32] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "cat '%s/calls.log' 2>/dev/null | wc -l", self->stub);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fgets(buf, sizeof(buf), p))
		buf[0] = '\0';
	pclose(p);

	return atoi(buf);
}

/* Wait (bounded, secs) until the outbox has nothing pending. */
static bool outbox_drained(struct vd *d, int secs)
{
	int i;

	for (i = 0; i < secs * 10; i++) {
		if (vd_status_num(d, "pending") == 0)
			return true;
		vd_sleep_ms(100);
	}

	return false;
}

static void keylime_conf(struct harness_fx_enroll *self, char *buf, size_t size,
			 const char *timeout, const char *extra)
{
	const char *src = getenv("VTPMD_SOURCE_ROOT");
	const char *p = self->pki;

	snprintf(buf, size,
		 "[hook.kl]\ntype = keylime\nverifier = https://127.0.0.1:%d\n"
		 "registrar = https://127.0.0.1:%d/\nagent_uuid = " UUID "\n"
		 "tls_ca = %s/ca.pem\ntls_cert = %s/client.pem\ntls_key = %s/client.key\n"
		 "agent_restart = %s/tests/helpers/fake-agent-restart %s/calls.log "
		 "https://127.0.0.1:%d " UUID " %s/ca.pem %s/client.pem %s/client.key\n"
		 "timeout = %s\nretries = 20\nretry_delay = 200ms\nretry_max_delay = 1s\n%s",
		 stub_port(self, "verifier"), stub_port(self, "registrar"), p, p, p,
		 src ? src : ".", self->stub, stub_port(self, "registrar"), p, p, p,
		 timeout, extra ? extra : "");
}

static void start(struct vd *d, const char *extra)
{
	ASSERT_EQ(vd_write_conf(d, NULL, extra), 0);
	if (vd_start(d) != 0) {
		vd_sh("cat '%s'", d->log);
		ASSERT_TRUE(false);
	}
}

/* Count the occurrences of word in the space-separated list s. */
static int count_word(const char *s, const char *word)
{
	size_t n = strlen(word);
	const char *p = s;
	int c = 0;

	while ((p = strstr(p, word))) {
		if ((p == s || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			c++;
		p += n;
	}

	return c;
}

TEST_F_TIMEOUT(enroll, keylime_rotation_calls_in_order, 150)
{
	char conf[4096];
	char calls[4096];
	char old[128];
	int skip;

	ASSERT_EQ(stub_start(self, "keylime", true), 0);
	keylime_conf(self, conf, sizeof(conf), "10s", NULL);
	start(&self->d, conf);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	stub_calls(self, 0, calls, sizeof(calls));
	/* A fresh start: nothing to delete yet, then the agent's first enrollment. */
	EXPECT_STREQ(calls, "verifier:DELETE:404 registrar:DELETE:404 agent:RESTART:0 "
		     "agent:REGISTER:200 agent:ACTIVATE:200 registrar:GET:200 verifier:POST:200 "
		     "verifier:GET:200");

	skip = stub_lines(self);
	vd_status_active(&self->d, old, sizeof(old));
	ASSERT_NE(old[0], '\0');
	kill(self->d.pid, SIGUSR1);
	ASSERT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	stub_calls(self, skip, calls, sizeof(calls));
	EXPECT_STREQ(calls, "verifier:DELETE:202 verifier:GET:200 verifier:GET:404 "
		     "registrar:DELETE:200 agent:RESTART:0 agent:REGISTER:200 agent:ACTIVATE:200 "
		     "registrar:GET:200 verifier:POST:200 verifier:GET:200");
	/* The swap came between the verifier's DELETE and the registrar's. */
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys\n"
			"c=[json.loads(l) for l in open(sys.argv[1]).readlines()[int(sys.argv[3]):]]\n"
			"d=[x for x in c if x[\"method\"]==\"DELETE\"]\n"
			"assert d[0][\"side\"]==\"verifier\" and d[0][\"active\"]==sys.argv[2], d[0]\n"
			"r=[x for x in d if x[\"side\"]==\"registrar\"][0]\n"
			"assert r[\"active\"] not in (None, sys.argv[2]), r\n"
			"assert all(a[\"t\"]<=b[\"t\"] for a,b in zip(c,c[1:]))' '%s/calls.log' '%s' %d",
			self->stub, old, skip), 0);
	EXPECT_EQ(vd_sh("grep -q 'keylime: step done hook=kl phase=commit step=verifier-wait elapsed_ms=' '%s'",
			self->d.log), 0);
}

TEST_F_TIMEOUT(enroll, sigkill_between_phases_delivers_commit_after_restart, 150)
{
	char conf[4096];
	char calls[4096];
	int skip;
	int i;

	ASSERT_EQ(stub_start(self, "keylime", true), 0);
	keylime_conf(self, conf, sizeof(conf), "10s", NULL);
	start(&self->d, conf);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	skip = stub_lines(self);

	/* The verifier refuses the re-add: the commit stops at its fourth step. */
	ASSERT_EQ(stub_control(self, "{\"fail\": {\"verifier POST\": 503}}"), 0);
	kill(self->d.pid, SIGUSR1);
	for (i = 0; i < 300; i++) {
		stub_calls(self, skip, calls, sizeof(calls));
		if (strstr(calls, "verifier:POST:503"))
			break;
		vd_sleep_ms(100);
	}
	ASSERT_NE_NULL(strstr(calls, "verifier:POST:503"));
	EXPECT_GT(vd_status_num(&self->d, "pending"), 0);
	vd_stop(&self->d, SIGKILL);

	ASSERT_EQ(stub_control(self, "{}"), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	stub_calls(self, skip, calls, sizeof(calls));
	TEST_LOG("calls: %s", calls);
	/* Resumed at the failed step: nothing before it ran twice. */
	EXPECT_EQ(count_word(calls, "verifier:DELETE:202"), 1);
	EXPECT_EQ(count_word(calls, "registrar:DELETE:200"), 1);
	EXPECT_EQ(count_word(calls, "agent:RESTART:0"), 1);
	EXPECT_EQ(count_word(calls, "verifier:POST:200"), 1);
	EXPECT_NE_NULL(strstr(calls, "verifier:POST:200 verifier:GET:200"));
	EXPECT_EQ(strcmp(calls + strlen(calls) - strlen("verifier:GET:200"), "verifier:GET:200"), 0);
	EXPECT_EQ(vd_status_num(&self->d, "failed"), 0);
}

TEST_F_TIMEOUT(enroll, keylime_bad_answers_are_retried_from_the_failed_step, 120)
{
	char conf[4096];
	char calls[4096];

	/* The registrar first refuses to delete, then answers junk, then too much. */
	ASSERT_EQ(stub_control(self, "{\"fail\": {\"registrar DELETE\": 500}}"), 0);
	ASSERT_EQ(stub_start(self, "keylime", true), 0);
	/* Short steps: a poll that only gets junk gives up soon. */
	keylime_conf(self, conf, sizeof(conf), "2s", "phase = commit\n");
	start(&self->d, conf);
	ASSERT_GE(vd_wait_num(&self->d, "attempts", 2), 2);
	stub_calls(self, 0, calls, sizeof(calls));
	EXPECT_STREQ(calls, "registrar:DELETE:500");
	ASSERT_EQ(stub_control(self, "{\"garbage\": {\"registrar GET\": \"text\"}}"), 0);
	ASSERT_EQ(vd_sh("for i in $(seq 100); do grep -q 'not a Keylime JSON object' '%s' && exit 0; "
			"sleep 0.1; done; exit 1", self->d.log), 0);
	ASSERT_EQ(stub_control(self, "{\"garbage\": {\"registrar GET\": \"huge\"}}"), 0);
	ASSERT_EQ(vd_sh("for i in $(seq 100); do grep -q 'response larger than 262144 bytes' '%s' && "
			"exit 0; sleep 0.1; done; exit 1", self->d.log), 0);
	ASSERT_EQ(stub_control(self, "{}"), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	stub_calls(self, 0, calls, sizeof(calls));
	TEST_LOG("calls: %s", calls);
	/* Deleted once (nothing was registered yet), restarted once: retries resumed. */
	EXPECT_EQ(count_word(calls, "registrar:DELETE:404"), 1);
	EXPECT_EQ(count_word(calls, "agent:RESTART:0"), 1);
	EXPECT_EQ(strncmp(calls, "registrar:DELETE:500 registrar:DELETE:404 agent:RESTART:0", 57), 0);
	EXPECT_EQ(strcmp(calls + strlen(calls) - strlen("verifier:POST:200 verifier:GET:200"),
			 "verifier:POST:200 verifier:GET:200"), 0);
}

TEST_F_TIMEOUT(enroll, keylime_commit_replaces_a_verifier_record_prepare_left, 120)
{
	char conf[4096];
	char calls[4096];
	int skip;

	ASSERT_EQ(stub_start(self, "keylime", true), 0);
	keylime_conf(self, conf, sizeof(conf), "2s", NULL);
	start(&self->d, conf);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	skip = stub_lines(self);

	/* The verifier will not delete: prepare fails for good, the swap goes on. */
	ASSERT_EQ(stub_control(self, "{\"fail\": {\"verifier DELETE\": 500}}"), 0);
	kill(self->d.pid, SIGUSR1);
	ASSERT_GE(vd_wait_num(&self->d, "failed", 1), 1);
	ASSERT_EQ(stub_control(self, "{}"), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	stub_calls(self, skip, calls, sizeof(calls));
	TEST_LOG("calls: %s", calls);
	/* The re-add meets the old record (409), removes it and adds the new AK. */
	EXPECT_NE_NULL(strstr(calls, "verifier:POST:409 verifier:DELETE:202 verifier:GET:200 "
			      "verifier:GET:404 verifier:POST:200 verifier:GET:200"));
	EXPECT_EQ(vd_status_num(&self->d, "failed"), 1);
}

/* A webhook sink hook with extra keys. */
static void sink_conf(struct harness_fx_enroll *self, char *buf, size_t size, const char *name,
		      const char *extra);

TEST_F_TIMEOUT(enroll, sigkill_before_the_swap_announces_the_active_instance_again, 120)
{
	char conf[2048];
	char extra[1024];
	char ctl[128];
	char old[128];
	int i;

	ASSERT_EQ(stub_start(self, "sink", false), 0);
	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\ntimeout = 30s\nretries = 100\n"
		 "retry_delay = 100ms\nretry_max_delay = 300ms", self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	start(&self->d, conf);
	ASSERT_TRUE(outbox_drained(&self->d, 30));
	vd_status_active(&self->d, old, sizeof(old));

	/* The prepare phase cannot get through: the swap waits, and vtpmd dies waiting. */
	snprintf(ctl, sizeof(ctl), "{\"refuse_until\": %lld}", (long long)time(NULL) + 1000);
	ASSERT_EQ(stub_control(self, ctl), 0);
	kill(self->d.pid, SIGUSR1);
	for (i = 0; i < 100 && stub_lines(self) < 4; i++)
		vd_sleep_ms(100);
	ASSERT_GE(stub_lines(self), 4);
	EXPECT_EQ(vd_status_num(&self->d, "rotations"), 0);
	vd_stop(&self->d, SIGKILL);

	ASSERT_EQ(stub_control(self, "{}"), 0);
	ASSERT_EQ(vd_start(&self->d), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 30));
	/* Delivered: start, the rotation's prepare, then "resume" for the same instance. */
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys\n"
			"c=[json.loads(l) for l in open(sys.argv[1])]\n"
			"ok=[(x[\"reason\"],x[\"phase\"],x[\"new\"]) for x in c if x[\"status\"]==200]\n"
			"assert [(r,p) for r,p,n in ok]==[(\"start\",\"prepare\"),(\"start\",\"commit\"),"
			"(\"operator\",\"prepare\"),(\"resume\",\"prepare\"),(\"resume\",\"commit\")], ok\n"
			"assert ok[-1][2]==sys.argv[2], ok' '%s/calls.log' '%s'", self->stub, old), 0);
}

static void sink_conf(struct harness_fx_enroll *self, char *buf, size_t size, const char *name,
		      const char *extra)
{
	snprintf(buf, size, "[hook.%s]\nurl = https://127.0.0.1:%d/events?token=not-logged\n%s\n",
		 name, stub_port(self, "sink"), extra);
}

TEST_F_TIMEOUT(enroll, webhook_down_30s_gets_every_event_once, 100)
{
	char conf[2048];
	char extra[1024];
	char ctl[128];
	int i;

	snprintf(ctl, sizeof(ctl), "{\"refuse_until\": %lld}", (long long)time(NULL) + 30);
	ASSERT_EQ(stub_control(self, ctl), 0);
	ASSERT_EQ(stub_start(self, "sink", false), 0);
	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\ntimeout = 2s\nretries = 60\n"
		 "retry_delay = 500ms\nretry_max_delay = 3s", self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	start(&self->d, conf);
	kill(self->d.pid, SIGUSR1);
	ASSERT_GE(vd_wait_num(&self->d, "rotations", 1), 1);
	EXPECT_GE(vd_status_num(&self->d, "pending"), 4);
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys; o=json.load(open(sys.argv[1]))[\"outbox\"]; "
			"assert o[\"oldest_pending_s\"] > 1 and o[\"failed\"] == 0, o; "
			"assert all(d[\"hook\"] in (\"web\", \"keep\") for d in o[\"deliveries\"]), o; "
			"assert any(\"503\" in d[\"error\"] for d in o[\"deliveries\"]), o' '%s/status'",
			self->d.mnt), 0);
	EXPECT_EQ(vd_sh("grep -q 'outbox: delivery failed, will retry hook=web .*HTTP status 503' '%s'",
			self->d.log), 0);
	EXPECT_NE(vd_sh("grep -q 'not-logged' '%s'", self->d.log), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 60));
	for (i = 0; i < 20; i++)
		vd_sleep_ms(100);	/* a late duplicate would show up now */
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys\n"
			"c=[json.loads(l) for l in open(sys.argv[1])]\n"
			"ok=[(x[\"id\"],x[\"phase\"]) for x in c if x[\"status\"]==200]\n"
			"assert len(ok)==4 and len(set(ok))==4, ok\n"
			"assert [p for i,p in ok]==[\"prepare\",\"commit\"]*2, ok\n"
			"assert ok[0][0]==ok[1][0]!=ok[2][0]==ok[3][0], ok\n"
			"assert c[0][\"t\"]<c[-1][\"t\"]-25, \"not down for 30 s\"' '%s/calls.log'",
			self->stub), 0);
}

TEST_F_TIMEOUT(enroll, mtls_without_client_cert_fails_until_configured, 90)
{
	char conf[2048];
	char extra[1024];

	ASSERT_EQ(stub_start(self, "sink", true), 0);
	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\ntimeout = 2s\nretry_delay = 200ms\n"
		 "retry_max_delay = 500ms", self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	start(&self->d, conf);
	ASSERT_GE(vd_wait_num(&self->d, "attempts", 2), 2);
	EXPECT_EQ(stub_lines(self), 0);
	EXPECT_GT(vd_status_num(&self->d, "pending"), 0);

	/* With the client certificate, after SIGHUP, the same events go out. */
	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\ntls_cert = %s/client.pem\n"
		 "tls_key = %s/client.key\ntimeout = 2s\nretry_delay = 200ms\nretry_max_delay = 500ms",
		 self->pki, self->pki, self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, conf), 0);
	kill(self->d.pid, SIGHUP);
	ASSERT_TRUE(outbox_drained(&self->d, 30));
	EXPECT_EQ(stub_lines(self), 2);
}

TEST_F_TIMEOUT(enroll, garbage_ca_file_fails_clearly_and_loses_nothing, 60)
{
	char conf[2048];
	char extra[1024];
	char st[16384];
	char path[400];

	ASSERT_EQ(stub_start(self, "sink", false), 0);
	ASSERT_EQ(vd_sh("echo 'not a certificate' > '%s/junk.pem'", self->pki), 0);
	snprintf(extra, sizeof(extra), "tls_ca = %s/junk.pem\nretry_delay = 200ms\n"
		 "retry_max_delay = 500ms\nphase = commit", self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	start(&self->d, conf);
	ASSERT_GE(vd_wait_num(&self->d, "attempts", 2), 2);
	snprintf(path, sizeof(path), "%s/status", self->d.mnt);
	ASSERT_GT(vd_read(path, st, sizeof(st)), 0);
	EXPECT_NE_NULL(strstr(st, "certificate file: "));
	EXPECT_NE_NULL(strstr(st, "junk.pem"));
	EXPECT_EQ(stub_lines(self), 0);

	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\nphase = commit", self->pki);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, conf), 0);
	kill(self->d.pid, SIGHUP);
	ASSERT_TRUE(outbox_drained(&self->d, 30));
	EXPECT_EQ(stub_lines(self), 1);
}

TEST_F_TIMEOUT(enroll, tls_verify_no_warns_and_trusts_any_server, 60)
{
	char conf[2048];
	char more[1024];

	ASSERT_EQ(stub_start(self, "sink", false), 0);
	sink_conf(self, conf, sizeof(conf), "trusting", "tls_verify = no");
	sink_conf(self, more, sizeof(more), "strict", "retry_delay = 100ms\nretry_max_delay = 200ms\nretries = 2");
	strncat(conf, more, sizeof(conf) - strlen(conf) - 1);
	start(&self->d, conf);
	EXPECT_EQ(vd_sh("grep -q 'TLS verification is off, any server can take the events hook=trusting' '%s'",
			self->d.log), 0);
	EXPECT_NE(vd_sh("grep -q 'TLS verification is off.*hook=strict' '%s'", self->d.log), 0);
	/* The strict hook does not know the test CA: it fails for good, the other delivers. */
	ASSERT_GE(vd_wait_num(&self->d, "failed", 2), 2);
	EXPECT_EQ(vd_status_num(&self->d, "pending"), 0);
	EXPECT_EQ(stub_lines(self), 2);
	EXPECT_EQ(vd_sh("grep -q 'retries exhausted hook=strict' '%s'", self->d.log), 0);
}

TEST_F_TIMEOUT(enroll, token_sent_redirects_refused_long_answers_bounded, 60)
{
	char conf[2048];
	char extra[1024];
	char token[400];
	int i;

	snprintf(token, sizeof(token), "%s/token", self->pki);
	ASSERT_EQ(vd_sh("printf 's3cr3t-t0ken\\n' > '%s' && chmod 600 '%s'", token, token), 0);
	ASSERT_EQ(stub_control(self, "{\"fail\": {\"sink\": 302}}"), 0);
	ASSERT_EQ(stub_start(self, "sink", false), 0);
	snprintf(extra, sizeof(extra), "tls_ca = %s/ca.pem\ntoken_file = %s\nretry_delay = 200ms\n"
		 "retry_max_delay = 400ms\nphase = commit", self->pki, token);
	sink_conf(self, conf, sizeof(conf), "web", extra);
	start(&self->d, conf);
	for (i = 0; i < 100 && stub_lines(self) < 2; i++)
		vd_sleep_ms(100);
	EXPECT_EQ(vd_status_num(&self->d, "pending"), 1);
	ASSERT_EQ(stub_control(self, "{\"huge\": true}"), 0);
	ASSERT_TRUE(outbox_drained(&self->d, 20));
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys\n"
			"c=[json.loads(l) for l in open(sys.argv[1])]\n"
			"assert all(x[\"status\"]==302 for x in c[:-1]) and c[-1][\"status\"]==200, c\n"
			"assert c[-1][\"auth\"]==\"Bearer s3cr3t-t0ken\" and c[-1][\"phase\"]==\"commit\"' "
			"'%s/calls.log'", self->stub), 0);
	EXPECT_NE(vd_sh("grep -q 's3cr3t' '%s'", self->d.log), 0);
}

/* A TCP listener that never accepts: a TLS handshake with it hangs. */
static int hang_start(struct harness_fx_enroll *self)
{
	char code[600];
	char port[450];
	char *argv[] = { (char *)"/usr/bin/python3", (char *)"-c", code, NULL };
	int i;

	snprintf(port, sizeof(port), "%s/hang.port", self->stub);
	snprintf(code, sizeof(code),
		 "import socket,time,os\n"
		 "s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(16)\n"
		 "open(\"%s.tmp\",\"w\").write(str(s.getsockname()[1]))\n"
		 "os.rename(\"%s.tmp\",\"%s\")\n"
		 "time.sleep(600)\n", port, port, port);
	if (posix_spawn(&self->hang_pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -errno;
	for (i = 0; i < 100; i++) {
		if (access(port, R_OK) == 0)
			return stub_port(self, "hang");
		vd_sleep_ms(50);
	}

	return -ETIMEDOUT;
}

TEST_F_TIMEOUT(enroll, hanging_hook_does_not_hold_back_others, 60)
{
	char conf[2048];
	char more[1024];
	int port;
	int i;

	ASSERT_EQ(stub_start(self, "sink", false), 0);
	port = hang_start(self);
	ASSERT_GT(port, 0);
	snprintf(conf, sizeof(conf), "[hook.hang]\nurl = https://127.0.0.1:%d/\ntimeout = 10s\n"
		 "retries = 0\nphase = commit\n", port);
	snprintf(more, sizeof(more), "tls_ca = %s/ca.pem\nphase = commit", self->pki);
	sink_conf(self, conf + strlen(conf), sizeof(conf) - strlen(conf), "fast", more);
	start(&self->d, conf);
	/* The fast hook's delivery should not wait for the hanging one's 10 s. */
	for (i = 0; i < 30 && stub_lines(self) < 1; i++)
		vd_sleep_ms(100);
	EXPECT_EQ(stub_lines(self), 1);
}

TEST_F_TIMEOUT(enroll, keylime_ca_prints_the_ca_of_the_ek_certificates, 60)
{
	const char *src = getenv("VTPMD_SOURCE_ROOT");

	start(&self->d, NULL);
	ASSERT_EQ(vd_sh("set -e; ca=$('%s/scripts/keylime-ca' -c '%s' --install '%s'); "
			"[ \"$ca\" = '%s/ca/ca.pem' ]; cmp \"$ca\" '%s/vtpmd-ek-ca.pem'; "
			"python3 -c 'import json,sys,base64; "
			"sys.stdout.buffer.write(base64.b64decode(json.load(open(sys.argv[1]))[\"new\"][\"ek_cert\"]))' "
			"\"$(ls '%s'/*-commit.json | head -n1)\" > '%s/ek.der'; "
			"openssl verify -CAfile \"$ca\" <(openssl x509 -inform der -in '%s/ek.der')",
			src ? src : ".", self->d.conf, self->pki, self->d.state, self->pki,
			self->d.events, self->pki, self->pki), 0);
	EXPECT_NE(vd_sh("'%s/scripts/keylime-ca' -c '%s/none.conf'", src ? src : ".", self->d.dir), 0);
}

TEST_F_TIMEOUT(enroll, webhook_timeout_fails_for_good_and_shows_in_status, 60)
{
	char conf[1024];
	char st[16384];
	char path[400];
	int port;

	port = hang_start(self);
	ASSERT_GT(port, 0);
	snprintf(conf, sizeof(conf), "[hook.hang]\nurl = https://127.0.0.1:%d/\ntimeout = 1s\n"
		 "retries = 1\nretry_delay = 100ms\nretry_max_delay = 100ms\n", port);
	start(&self->d, conf);
	ASSERT_GE(vd_wait_num(&self->d, "failed", 2), 2);
	EXPECT_EQ(vd_status_num(&self->d, "pending"), 0);
	snprintf(path, sizeof(path), "%s/status", self->d.mnt);
	ASSERT_GT(vd_read(path, st, sizeof(st)), 0);
	EXPECT_NE_NULL(strstr(st, "\"state\": \"failed\""));
	EXPECT_NE_NULL(strstr(st, "timed out"));
	EXPECT_EQ(vd_sh("grep -q 'retries exhausted hook=hang .*phase=commit attempt=2' '%s'",
			self->d.log), 0);
	/* Failed deliveries stay on disk, for the next start or SIGHUP. */
	EXPECT_EQ(vd_sh("[ $(ls '%s/outbox' | grep -c '\\.state$') = 2 ]", self->d.state), 0);

	/* SIGHUP with the hook pointed at a server that answers: both go out, in order. */
	ASSERT_EQ(stub_start(self, "sink", false), 0);
	snprintf(conf, sizeof(conf), "tls_ca = %s/ca.pem", self->pki);
	sink_conf(self, st, sizeof(st), "hang", conf);
	ASSERT_EQ(vd_write_conf(&self->d, NULL, st), 0);
	kill(self->d.pid, SIGHUP);
	/*
	 * Not outbox_drained(): before the reload takes the failed ones back,
	 * and between the two phases, nothing is pending either.  Done is an
	 * empty outbox.
	 */
	for (int i = 0; i < 300 && vd_sh("[ -z \"$(ls '%s/outbox')\" ]", self->d.state) != 0; i++)
		vd_sleep_ms(100);
	EXPECT_EQ(vd_status_num(&self->d, "failed"), 0);
	EXPECT_EQ(vd_sh("python3 -c 'import json,sys\n"
			"c=[json.loads(l) for l in open(sys.argv[1])]\n"
			"assert [x[\"phase\"] for x in c]==[\"prepare\",\"commit\"], c' '%s/calls.log'",
			self->stub), 0);
	EXPECT_EQ(vd_sh("[ -z \"$(ls '%s/outbox')\" ]", self->d.state), 0);
}

/*
 * vtpmd -n on a config with one bad hook: exit 1 and a message naming the
 * problem (want: a basic regular expression without single quotes).
 */
static int check_conf(struct vd *d, const char *hook, const char *want)
{
	FILE *f = fopen(d->conf, "w");

	if (!f)
		return -1;
	fprintf(f, "[vtpmd]\nstate_dir = %s\nmountpoint = %s\n\n[hook.h]\n%s\n", d->state, d->mnt,
		hook);
	fclose(f);

	return vd_sh("out=$('%s' -n -c '%s' 2>&1); rc=$?; echo \"$out\"; "
		     "[ $rc -eq 1 ] && echo \"$out\" | grep -q -- '%s'",
		     getenv("VTPMD_BIN"), d->conf, want);
}

TEST_F(enroll, config_check_refuses_bad_hooks)
{
	char hook[1024];
	char token[400];
	char want[600];

	snprintf(token, sizeof(token), "%s/token", self->pki);
	ASSERT_EQ(vd_sh("printf 'abc\\n' > '%s' && chmod 644 '%s'", token, token), 0);
	EXPECT_EQ(check_conf(&self->d, "url = http://127.0.0.1/x", "is not an https:// URL"), 0);
	EXPECT_EQ(check_conf(&self->d, "url = https:///x", "invalid URL"), 0);
	EXPECT_EQ(check_conf(&self->d, "url = https://user@h/x", "invalid URL"), 0);
	snprintf(hook, sizeof(hook), "url = https://h/\ntoken_file = %s", token);
	EXPECT_EQ(check_conf(&self->d, hook, "mode 0600 or stricter"), 0);
	snprintf(hook, sizeof(hook), "url = https://h/\ntoken_file = %s/none", self->pki);
	EXPECT_EQ(check_conf(&self->d, hook, "No such file"), 0);
	ASSERT_EQ(vd_sh("printf 'a b\\n' > '%s' && chmod 600 '%s'", token, token), 0);
	snprintf(hook, sizeof(hook), "url = https://h/\ntoken_file = %s", token);
	EXPECT_EQ(check_conf(&self->d, hook, "visible ASCII"), 0);
	snprintf(hook, sizeof(hook), "url = https://h/\ntls_cert = %s/client.pem", self->pki);
	EXPECT_EQ(check_conf(&self->d, hook, "tls_cert and tls_key go together"), 0);
	snprintf(hook, sizeof(hook), "url = https://h/\ntls_ca = %s/missing.pem", self->pki);
	EXPECT_EQ(check_conf(&self->d, hook, "tls_ca"), 0);
	EXPECT_EQ(check_conf(&self->d, "exec = /bin/true\nurl = https://h/", "does not apply to hooks of type exec"), 0);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v\nregistrar = https://r",
			     "agent_uuid"), 0);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v\nregistrar = https://r\n"
			     "agent_uuid = a\nagent_restart = /bin/true\ntpm_policy = [1]",
			     "tpm_policy: expected a JSON object"), 0);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v\nregistrar = https://r\n"
			     "agent_uuid = a\nagent_restart = /bin/true\naccept_tpm_hash_algs = sha256,",
			     "comma-separated list"), 0);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v/?x=1\nregistrar = https://r\n"
			     "agent_uuid = a\nagent_restart = /bin/true", "without a query"), 0);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v\nregistrar = https://r\n"
			     "agent_uuid = a/b\nagent_restart = /bin/true", "agent_uuid: 1 to 255"), 0);
	/* A good one prints with its secrets left out: the query and the token. */
	ASSERT_EQ(vd_sh("printf 'tok-s3cret\\n' > '%s' && chmod 600 '%s'", token, token), 0);
	snprintf(hook, sizeof(hook), "url = https://h/x?key=q-s3cret\ntoken_file = %s", token);
	EXPECT_EQ(check_conf(&self->d, hook, "tokenless"), 1);
	EXPECT_EQ(vd_sh("out=$('%s' -n -c '%s') && echo \"$out\" | grep -qx 'url = https://h/x?redacted' "
			"&& ! echo \"$out\" | grep -q s3cret", getenv("VTPMD_BIN"), self->d.conf), 0);
	EXPECT_EQ(check_conf(&self->d, "url = https://h/\nretry_delay = 5s\nretry_max_delay = 1s",
			     "retry_max_delay must not be shorter"), 0);
	/* programs: at the key's line, the first problem only */
	snprintf(want, sizeof(want), "%s:7: exec ./nonexistent/prog.: No such file", self->d.conf);
	EXPECT_EQ(check_conf(&self->d, "phase = commit\nexec = /nonexistent/prog", want), 0);
	snprintf(want, sizeof(want), "%s:6: exec ./tmp. is not a regular file", self->d.conf);
	EXPECT_EQ(check_conf(&self->d, "exec = /tmp", want), 0);
	snprintf(want, sizeof(want), "%s:10: agent_restart ./nonexistent/restart.: No such file",
		 self->d.conf);
	EXPECT_EQ(check_conf(&self->d, "type = keylime\nverifier = https://v\nregistrar = https://r\n"
			     "agent_uuid = a\nagent_restart = /nonexistent/restart", want), 0);
}

TEST_HARNESS_MAIN
