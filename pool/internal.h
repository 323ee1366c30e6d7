#pragma once

#include <stdint.h>

/*
 * Helpers shared by the files of pool/ only.  No other directory includes
 * this header.
 */

#define POOL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* File names inside an instance directory. */
#define POOL_FILE_META "meta"
#define POOL_FILE_PERM "permall"
#define POOL_FILE_VOLATILE "volatile"

static inline uint32_t pool_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint16_t pool_get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void pool_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}
