/* lib/backend/job.h - a job of libtidegate-backend, and the frames that
 * answer it. Private to lib/backend/; pure functions over memory (no socket),
 * so the unit test drives them directly. The backend's thread only.
 *
 * A job is one allocation: the struct, its pair table, then every key and
 * value copied with a NUL after it. It lives from its JOB frame until its
 * reply (the decoded frame's buffer can be reused at once). */
#ifndef TGB_JOB_H
#define TGB_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "gate/wire.h"
#include "tidegate/backend_lib.h"

struct tgb_job {
    struct tgb_job *next;      /* ready queue, or the held list */
    struct tgb_job *prev;      /* held list */
    uint64_t        id;
    uint32_t        link;      /* generation of the link it came on */
    uint32_t        epoch_gen; /* generation of the gate epoch it belongs to */
    tgb_kind_t      kind;
    size_t          npairs;
    tgb_pair_t     *pairs;     /* inside this allocation */
};

/* Copies the pairs of JOB <id> from <body>,<len>, a body tg_wire_check
 * accepted with <npairs> pairs. Returns the job (the caller owns it), or NULL
 * when out of memory. */
tgb_job_t *tgb_job__decode(uint64_t id, const uint8_t *body, size_t len, size_t npairs);
void       tgb_job__free(tgb_job_t *job);

/* Frames. Each resets <e> and leaves one complete frame in it, compressed when
 * <lz4_min> > 0 and that makes it shorter. Each refuses a body over <max_body>
 * before compression (-EMSGSIZE), bad arguments (-EINVAL); returns 0 or
 * -ENOMEM otherwise. */

/* A REPLY to job <id>. */
int tgb_job__reply(tg_wire_enc_t *e, uint64_t id, const tgb_reply_t *r, uint32_t max_body,
                   size_t lz4_min);
/* An ERROR about job <id> (0: the link); <status> 0 and <message> NULL are
 * left out. */
int tgb_job__error(tg_wire_enc_t *e, uint64_t id, int status, const char *code,
                   const char *message, uint32_t max_body, size_t lz4_min);
/* Completes the frame begun in <e> at offset 0, with the checks above. */
int tgb_job__end(tg_wire_enc_t *e, uint32_t max_body, size_t lz4_min);

#endif
