package admin

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/petitiond/petitiond/store"
)

// Metric names and labels are a contract with dashboards and the load tool:
// change them only together.
const (
	metricLetters           = "petitiond_letters_total"
	metricRejections        = "petitiond_rejections_total"
	metricSessions          = "petitiond_smtp_sessions_total"
	metricSessionsRefused   = "petitiond_smtp_sessions_refused_total"
	metricDKIM              = "petitiond_dkim_results_total"
	metricBatches           = "petitiond_batches_total"
	metricDeliveries        = "petitiond_deliveries"
	metricAttempts          = "petitiond_delivery_attempts_total"
	metricOldestPending     = "petitiond_oldest_pending_letter_age_seconds"
	metricOldestUndelivered = "petitiond_oldest_undelivered_batch_age_seconds"
	metricCommits           = "petitiond_store_commits_total"
	metricCommitWrites      = "petitiond_store_commit_writes_total"
)

// Label values. Rejection reasons are classes, not the reason text, so the
// number of series stays fixed whatever senders do.
var (
	letterOutcomes   = []string{store.EventAccepted, store.EventDuplicate, store.EventHeld, store.EventRejected, store.EventReleased, store.EventDropped}
	rejectionClasses = []string{"bare_line_ending", "from", "size", "unverified", "other"}
	refusalClasses   = []string{"max_connections", "max_per_ip", "other"}
	dkimResults      = []string{"pass", "fail", "temperror"}
	attemptOutcomes  = []string{store.EventDelivered, store.EventDeferred, store.EventFailed}
	deliveryStates   = []string{store.DeliveryQueued, store.DeliveryDeferred, store.DeliveryDelivered, store.DeliveryFailed}
)

// adminRequeuePrefix starts the reason of the "deferred" events store.Retry
// writes when an admin requeues a copy: those are not delivery attempts.
const adminRequeuePrefix = "requeued by an admin"

// Metrics counts what the daemon does for /metrics. The SMTP front end
// reports sessions and DKIM results to it directly (it implements
// inbound.Metrics); letters, batches and delivery attempts are counted from
// the store's event feed, so they agree with the journal; the rest is read
// from the store at each scrape. Counters count since the daemon started.
type Metrics struct {
	reg        *prometheus.Registry
	letters    *prometheus.CounterVec
	rejections *prometheus.CounterVec
	sessions   prometheus.Counter
	refused    *prometheus.CounterVec
	dkim       *prometheus.CounterVec
	batches    prometheus.Counter
	attempts   *prometheus.CounterVec
}

func newMetrics(st *store.Store, now func() time.Time) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		letters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricLetters,
			Help: "Letters by what happened to them (from the event journal)."}, []string{"outcome"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRejections,
			Help: "Letters rejected at the end of DATA, by reason class."}, []string{"reason"}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{Name: metricSessions,
			Help: "SMTP sessions started (after EHLO/HELO)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricSessionsRefused,
			Help: "SMTP connections refused with 421 by the connection limits."}, []string{"reason"}),
		dkim: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricDKIM,
			Help: "DKIM verification results of letters (temperror: the sender was asked to retry)."}, []string{"result"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: metricBatches,
			Help: "Batches closed."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAttempts,
			Help: "Delivery attempts of batch copies, by outcome."}, []string{"outcome"}),
	}
	// Every label value exists from the start, so a rate() over a series
	// that has not happened yet reads 0 rather than nothing.
	for _, v := range letterOutcomes {
		m.letters.WithLabelValues(v)
	}
	for _, v := range rejectionClasses {
		m.rejections.WithLabelValues(v)
	}
	for _, v := range refusalClasses {
		m.refused.WithLabelValues(v)
	}
	for _, v := range dkimResults {
		m.dkim.WithLabelValues(v)
	}
	for _, v := range attemptOutcomes {
		m.attempts.WithLabelValues(v)
	}
	m.reg.MustRegister(m.letters, m.rejections, m.sessions, m.refused, m.dkim, m.batches, m.attempts,
		newStoreCollector(st, now),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Session counts an SMTP session (inbound.Metrics).
func (m *Metrics) Session() { m.sessions.Inc() }

// SessionRefused counts a connection refused by a limit (inbound.Metrics).
func (m *Metrics) SessionRefused(why string) { m.refused.WithLabelValues(refusalClass(why)).Inc() }

// Verdict counts a DKIM result: pass, fail or temperror (inbound.Metrics).
func (m *Metrics) Verdict(outcome string) {
	for _, r := range dkimResults {
		if r == outcome {
			m.dkim.WithLabelValues(r).Inc()
			return
		}
	}
	m.dkim.WithLabelValues("other").Inc()
}

// observe counts one journal event.
func (m *Metrics) observe(e store.Event) {
	switch e.Event {
	case store.EventAccepted, store.EventDuplicate, store.EventHeld, store.EventReleased, store.EventDropped:
		m.letters.WithLabelValues(e.Event).Inc()
	case store.EventRejected:
		m.letters.WithLabelValues(e.Event).Inc()
		m.rejections.WithLabelValues(rejectionClass(e.Reason)).Inc()
	case store.EventBatched:
		m.batches.Inc()
	case store.EventDeferred:
		if !strings.HasPrefix(e.Reason, adminRequeuePrefix) {
			m.attempts.WithLabelValues(e.Event).Inc()
		}
	case store.EventDelivered, store.EventFailed:
		m.attempts.WithLabelValues(e.Event).Inc()
	}
}

// follow counts the journal's events after seq until ctx ends. A store
// error (the disk, or the store closing under it) is retried after a pause,
// resuming where it stopped, so no event is counted twice or missed.
func (m *Metrics) follow(ctx context.Context, st *store.Store, after uint64, log *slog.Logger) {
	for ctx.Err() == nil {
		f := newFeed(st, after)
		for {
			e, ok, err := f.next(ctx, nil)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("metrics: reading the event journal failed; will retry", "err", err)
				}
				break
			}
			if ok {
				m.observe(e)
				after = e.Seq
			}
		}
		f.close()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// rejectionClass maps the reason text relay/inbound gives a rejection to a
// short, stable class. It reads the text's start, which inbound writes from
// fixed strings (and relay/verify's ErrFrom).
func rejectionClass(reason string) string {
	r := strings.ToLower(reason)
	switch {
	case strings.HasPrefix(r, "bare cr or lf"):
		return "bare_line_ending"
	case strings.HasPrefix(r, "message over"):
		return "size"
	case strings.HasPrefix(r, "unverified"):
		return "unverified"
	case strings.HasPrefix(r, "verify: bad from"), strings.HasPrefix(r, "from address"):
		return "from"
	}
	return "other"
}

// refusalClass maps relay/inbound's limit refusal text to a class.
func refusalClass(why string) string {
	switch why {
	case "too many connections":
		return "max_connections"
	case "too many connections from your address":
		return "max_per_ip"
	}
	return "other"
}

// storeCollector reads the gauges and the commit counters from the store at
// each scrape, so they are never stale and need no bookkeeping.
type storeCollector struct {
	st            *store.Store
	now           func() time.Time
	deliveries    *prometheus.Desc
	oldestPending *prometheus.Desc
	oldestBatch   *prometheus.Desc
	commits       *prometheus.Desc
	writes        *prometheus.Desc
}

func newStoreCollector(st *store.Store, now func() time.Time) *storeCollector {
	return &storeCollector{
		st: st, now: now,
		deliveries: prometheus.NewDesc(metricDeliveries,
			"Batch copies by delivery state, now.", []string{"state"}, nil),
		oldestPending: prometheus.NewDesc(metricOldestPending,
			"Age of the oldest counted letter waiting for a batch; 0 when none waits.", nil, nil),
		oldestBatch: prometheus.NewDesc(metricOldestUndelivered,
			"Age of the oldest batch some recipient does not have yet (failed copies included); 0 when none.", nil, nil),
		commits: prometheus.NewDesc(metricCommits,
			"Store group commits (each one fsync).", nil, nil),
		writes: prometheus.NewDesc(metricCommitWrites,
			"Store writes carried by those commits; writes/commits is writes per fsync.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deliveries, c.oldestPending, c.oldestBatch, c.commits, c.writes} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	if st, err := c.st.Stats(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.deliveries, err)
	} else {
		for _, s := range deliveryStates {
			var v uint64
			switch s {
			case store.DeliveryQueued:
				v = st.Deliveries.Queued
			case store.DeliveryDeferred:
				v = st.Deliveries.Deferred
			case store.DeliveryDelivered:
				v = st.Deliveries.Delivered
			case store.DeliveryFailed:
				v = st.Deliveries.Failed
			}
			ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.GaugeValue, float64(v), s)
		}
	}
	if _, oldest, err := c.st.Pending(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.oldestPending, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.oldestPending, prometheus.GaugeValue, age(now, oldest))
	}
	if oldest, err := c.st.OldestUndelivered(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.oldestBatch, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.oldestBatch, prometheus.GaugeValue, age(now, oldest))
	}
	commits, writes := c.st.CommitStats()
	ch <- prometheus.MustNewConstMetric(c.commits, prometheus.CounterValue, float64(commits))
	ch <- prometheus.MustNewConstMetric(c.writes, prometheus.CounterValue, float64(writes))
}

// age is how long ago t was in seconds, 0 for the zero time (nothing waits)
// and never negative (clock steps).
func age(now, t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t).Seconds(), 0)
}
