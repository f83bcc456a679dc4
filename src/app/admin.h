/* app/admin.h - the admin endpoints under /admin/ (docs/operations.md).
 *
 * Every one is guarded: with admin.key set, a request must carry
 * "Authorization: Bearer KEY" (else 401); without it, only peers connecting
 * from 127.0.0.1 or ::1 are answered (else 403). Today there is one:
 * POST /admin/cache/purge?prefix=PATH&route=NAME drops cached replies on the
 * gate's home loop and answers {"purged":N}.
 *
 * Client loops; a purge crosses to the home loop and back by mail. */
#ifndef TG_APP_ADMIN_H
#define TG_APP_ADMIN_H

#include <stdbool.h>

#include "app/server.h"

/* Client loop. Whether <req> is an admin request; if so it is answered (now,
 * or once the home loop has done the work). */
bool tg_admin_route(tg_server_t *s, tg_http_req_t *req);

#endif
