#pragma once

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "mux.h"
#include "outbox.h"
#include "pool.h"

/*
 * Rotation: decides nothing about when (the mux and the timers do), but
 * carries a rotation out: record the event in the outbox, run the prepare
 * hooks, swap between two commands, run the commit hooks, retire the old
 * instance.  Its own thread runs everything that may wait.
 */

struct rotate;

int rotate_new(const struct conf *c, struct pool *pool, struct outbox *ob, struct rotate **ret);
void rotate_free(struct rotate *r);
void rotate_mux_ops(struct rotate *r, struct mux_rotator *ret);
int rotate_first(struct rotate *r, struct mux *m, struct inst **ret_inst, struct meta *ret_meta);
int rotate_start(struct rotate *r);
void rotate_request(struct rotate *r, const char *reason);
void rotate_set_conf(struct rotate *r, const struct conf *c);
int rotate_status(struct rotate *r, char **ret_json);
