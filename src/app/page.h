/* app/page.h - the demo page served at GET / (read-only data). */
#ifndef TG_APP_PAGE_H
#define TG_APP_PAGE_H

extern const char          tg_demo_page[];
extern const unsigned long tg_demo_page_len;

#endif
