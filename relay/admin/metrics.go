package admin

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/petitiond/petitiond/relay/inbound"
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
	metricHeld              = "petitiond_letters_held"
	metricPending           = "petitiond_letters_pending"
	metricPaused            = "petitiond_paused"
	metricBuildInfo         = "petitiond_build_info"
	metricConfirmations     = "petitiond_confirmation_requests_total"
	metricConfirmWaiting    = "petitiond_confirmation_requests_waiting"
	metricReceipts          = "petitiond_receipts_total"
	metricSupporterQueue    = "petitiond_supporter_mail_queued"
)

// Label values: typed classes, never a reason's text, so the number of
// series stays fixed whatever senders do. Each label set is registered in
// full at start, so a rate() over something that has not happened yet reads
// 0 rather than nothing. The class sets hold every constant of their type
// (metrics_internal_test.go reads the packages' source to check), so a
// class added later is not counted as "other".
var (
	letterOutcomes   = []store.EventKind{store.EventAccepted, store.EventDuplicate, store.EventHeld, store.EventRejected, store.EventReleased, store.EventDropped, store.EventConfirmed}
	rejectionClasses = []store.RejectClass{store.RejectBareLineEnding, store.RejectLineTooLong, store.RejectFrom, store.RejectSize, store.RejectUnverified}
	refusalClasses   = []inbound.RefusalClass{inbound.RefusedMaxConnections, inbound.RefusedMaxPerIP, inbound.CutLifetime, inbound.CutTooSlow}
	dkimResults      = []inbound.DKIMResult{inbound.DKIMPass, inbound.DKIMFail, inbound.DKIMNone, inbound.DKIMTempError}
	heldReasons      = []store.HeldReason{store.HeldUnverified, store.HeldPostmaster, store.HeldUnbatchable, store.HeldConfirm, store.HeldUnconfirmed, store.HeldForwardFailed}
	attemptOutcomes  = []store.EventKind{store.EventDelivered, store.EventDeferred, store.EventFailed}
	deliveryStates   = []store.DeliveryState{store.DeliveryQueued, store.DeliveryDeferred, store.DeliveryDelivered, store.DeliveryFailed}
)

// labelOther counts a class this build does not know (from a newer build's
// events, or a new class without its label).
const labelOther = "other"

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
			Help: "SMTP connections refused with 421 by the connection limits (max_connections, max_per_ip), or cut by the session limits (session_lifetime, too_slow)."}, []string{"reason"}),
		dkim: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricDKIM,
			Help: "DKIM verification results of letters (none: no signature at all; fail: signed, but no signature passed; temperror: the sender was asked to retry)."}, []string{"result"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: metricBatches,
			Help: "Batches closed."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAttempts,
			Help: "Delivery attempts of batch copies, by outcome."}, []string{"outcome"}),
	}
	for _, v := range letterOutcomes {
		m.letters.WithLabelValues(string(v))
	}
	for _, v := range rejectionClasses {
		m.rejections.WithLabelValues(string(v))
	}
	m.rejections.WithLabelValues(labelOther)
	for _, v := range refusalClasses {
		m.refused.WithLabelValues(string(v))
	}
	m.refused.WithLabelValues(labelOther)
	for _, v := range dkimResults {
		m.dkim.WithLabelValues(string(v))
	}
	for _, v := range attemptOutcomes {
		m.attempts.WithLabelValues(string(v))
	}
	b := ReadBuild()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricBuildInfo,
		Help: "Always 1: the labels say what this daemon was built from."}, []string{"version", "revision", "goversion"})
	build.WithLabelValues(b.Version, b.Revision, b.GoVersion).Set(1)
	m.reg.MustRegister(m.letters, m.rejections, m.sessions, m.refused, m.dkim, m.batches, m.attempts, build,
		newStoreCollector(st, now),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Session counts an SMTP session (inbound.Metrics).
func (m *Metrics) Session() { m.sessions.Inc() }

// SessionRefused counts a connection refused, or a session cut, by a limit
// (inbound.Metrics).
func (m *Metrics) SessionRefused(why inbound.RefusalClass) {
	m.refused.WithLabelValues(known(why, refusalClasses)).Inc()
}

// Verdict counts a letter's DKIM result (inbound.Metrics).
func (m *Metrics) Verdict(result inbound.DKIMResult) {
	m.dkim.WithLabelValues(known(result, dkimResults)).Inc()
}

// known is v's label: itself when it is one of the registered values, else
// labelOther.
func known[T ~string](v T, values []T) string {
	for _, k := range values {
		if v == k {
			return string(v)
		}
	}
	return labelOther
}

// observe counts one journal event.
func (m *Metrics) observe(e store.Event) {
	switch e.Event {
	case store.EventAccepted, store.EventDuplicate, store.EventHeld, store.EventReleased, store.EventDropped, store.EventConfirmed:
		m.letters.WithLabelValues(string(e.Event)).Inc()
	case store.EventRejected:
		m.letters.WithLabelValues(string(e.Event)).Inc()
		m.rejections.WithLabelValues(known(e.Class, rejectionClasses)).Inc()
	case store.EventBatched:
		m.batches.Inc()
	case store.EventDelivered, store.EventDeferred, store.EventFailed:
		// An admin's requeue is its own kind, not an attempt; mail to a
		// supporter names a letter, not a batch.
		if e.Batch != 0 {
			m.attempts.WithLabelValues(string(e.Event)).Inc()
		}
	}
}

// follow counts the journal's events after seq until ctx ends. A store
// error (the disk) is retried after a pause, resuming where it stopped, so
// no event is counted twice or missed; it returns when the store closed.
func (m *Metrics) follow(ctx context.Context, st *store.Store, after uint64, log *slog.Logger) {
	for ctx.Err() == nil {
		f := st.Follow(after)
		for {
			e, err := f.Next(ctx)
			if err != nil {
				if errors.Is(err, store.ErrClosed) {
					f.Close()
					return
				}
				if ctx.Err() == nil {
					log.Warn("metrics: reading the event journal failed; will retry", "err", err)
				}
				break
			}
			m.observe(e)
		}
		after = f.After()
		f.Close()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
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
	held          *prometheus.Desc
	pending       *prometheus.Desc
	paused        *prometheus.Desc
	confirms      *prometheus.Desc
	confirmWait   *prometheus.Desc
	receipts      *prometheus.Desc
	supporterMail *prometheus.Desc
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
		held: prometheus.NewDesc(metricHeld,
			"Letters held for an admin, now, by why they are held.", []string{"reason"}, nil),
		pending: prometheus.NewDesc(metricPending,
			"Counted letters waiting for a batch, now.", nil, nil),
		paused: prometheus.NewDesc(metricPaused,
			"1 while an admin has paused batches and sending (petitiond pause), else 0.", nil, nil),
		confirms: prometheus.NewDesc(metricConfirmations,
			"Confirmation requests since the store was made, by outcome: sent; confirmed by a reply; expired without one; undeliverable.",
			[]string{"outcome"}, nil),
		confirmWait: prometheus.NewDesc(metricConfirmWaiting,
			"Confirmation requests waiting for their turn under verify.confirm_per_hour, now.", nil, nil),
		receipts: prometheus.NewDesc(metricReceipts,
			"Receipts sent to supporters since the store was made.", nil, nil),
		supporterMail: prometheus.NewDesc(metricSupporterQueue,
			"Messages to supporters waiting for delivery, now.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deliveries, c.oldestPending, c.oldestBatch, c.commits, c.writes, c.held, c.pending, c.paused,
		c.confirms, c.confirmWait, c.receipts, c.supporterMail} {
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
			ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.GaugeValue, float64(v), string(s))
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
		c.collectSupporters(ch, st.Supporters)
	}
	c.collectHeld(ch)
	if p, err := c.st.Paused(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.paused, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, boolGauge(p.Paused))
	}
	if p, err := c.st.Pending(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.oldestPending, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.oldestPending, prometheus.GaugeValue, age(now, p.Oldest))
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

// collectHeld reports the held letters by reason: every known reason, 0
// included, and any other the store has.
func (c *storeCollector) collectHeld(ch chan<- prometheus.Metric) {
	counts, err := c.st.HeldCounts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.held, err)
		return
	}
	for _, r := range heldReasons {
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(counts[r]), string(r))
		delete(counts, r)
	}
	for r, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(n), string(r))
	}
}

// collectSupporters reports the mail to supporters (SPEC 11).
func (c *storeCollector) collectSupporters(ch chan<- prometheus.Metric, sm store.SupporterMailCounts) {
	for outcome, v := range map[string]uint64{"sent": sm.ConfirmSent, "confirmed": sm.ConfirmConfirmed,
		"expired": sm.ConfirmExpired, "undeliverable": sm.ConfirmUndeliverable} {
		ch <- prometheus.MustNewConstMetric(c.confirms, prometheus.CounterValue, float64(v), outcome)
	}
	ch <- prometheus.MustNewConstMetric(c.confirmWait, prometheus.GaugeValue, float64(sm.ConfirmWaiting))
	ch <- prometheus.MustNewConstMetric(c.receipts, prometheus.CounterValue, float64(sm.ReceiptsSent))
	ch <- prometheus.MustNewConstMetric(c.supporterMail, prometheus.GaugeValue, float64(sm.Queued))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
