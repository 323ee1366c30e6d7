#pragma once

/* vtpmd's own CA for EK certificates, made on first start. */

int localca_create(const char *cert_path, const char *key_path);
