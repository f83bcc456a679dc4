/* core/list.h - intrusive circular doubly linked list. The links live inside
 * their owner (a timer, a connection), so linking never allocates and unlinking
 * is O(1). Not thread-safe: each list belongs to one thread. */
#ifndef TG_CORE_LIST_H
#define TG_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tg_link {
    struct tg_link *prev;
    struct tg_link *next; /* NULL while not on a list */
} tg_link_t;

/* A head is a link that points at itself when the list is empty. */
static inline void tg_list_init(tg_link_t *head)
{
    head->prev = head->next = head;
}

static inline bool tg_list_empty(const tg_link_t *head)
{
    return head->next == head;
}

static inline bool tg_link_linked(const tg_link_t *l)
{
    return l->next != NULL;
}

/* Appends <l> at the tail of <head>; <l> must not be on a list. */
static inline void tg_list_push(tg_link_t *head, tg_link_t *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Unlinks <l>; a no-op when it is not linked. */
static inline void tg_link_remove(tg_link_t *l)
{
    if (l->next == NULL)
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

/* Removes and returns the first link of <head>, or NULL when empty. */
static inline tg_link_t *tg_list_shift(tg_link_t *head)
{
    if (tg_list_empty(head))
        return NULL;
    tg_link_t *l = head->next;
    tg_link_remove(l);
    return l;
}

/* Moves every link of <from> to the tail of <to>, leaving <from> empty. */
static inline void tg_list_splice(tg_link_t *to, tg_link_t *from)
{
    if (tg_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    tg_list_init(from);
}

#endif
