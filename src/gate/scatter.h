/* gate/scatter.h - scatter/gather routes (route.NAME.mode = scatter): a job
 * becomes parts, one for every backend of the group or one per slice of the
 * request's JSON array (split = N); each part is an ordinary job (queued,
 * kept, resubmitted when its link drops, given up at the deadline) whose
 * answer comes here instead of to the client; once every part is answered,
 * the parts are reduced into the client's one answer: arrays concatenated,
 * objects merged, or the parts handed to a reducer route.
 *
 * Gate-internal (home loop only), like backend.h. */
#ifndef TG_GATE_SCATTER_H
#define TG_GATE_SCATTER_H

#include "gate/backend.h"

typedef struct tg_gather tg_gather_t;

/* Scatters <job> (on scatter route <r>, not admitted): its parts are admitted
 * as jobs of their own; <job> is answered once, when they are. */
void tg_scatter_start(tg_gate_t *g, gate_route_t *r, tg_job_t *job);

/* The answer <a> (NULL: out of memory) of part <part> of <gt>; takes <a>. */
void tg_scatter_part(tg_gate_t *g, tg_gather_t *gt, uint16_t part, tg_answer_t *a);

/* At destruction: gathers still waiting (their loops are gone), memory only. */
void tg_scatter_destroy_all(tg_gate_t *g);

#endif
