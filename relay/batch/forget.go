package batch

import (
	"context"
	"time"
)

// forgetDue takes the sender and IP out of journal events older than
// store.retention (SPEC 13), then wipes the store file's free pages of what
// this and the purges before it removed, so that it is gone from the file
// too. It returns how long until more events come due.
func (p *Purger) forgetDue(ctx context.Context) time.Duration {
	next, err := p.store.ForgetOldSenders(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("clearing old events' senders failed; will retry", "err", err)
		}
		return time.Minute
	}
	st, err := p.store.Wipe(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("wiping the store's free pages failed; will retry", "err", err)
		}
		return time.Minute
	}
	if st.Zeroed > 0 {
		p.log.Info("free pages of the store wiped after retention", "pages", st.Zeroed)
	}
	return max(next.Sub(p.now()), time.Millisecond)
}
