package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/petitiond/petitiond/store"
)

// backup streams a consistent copy of the store (store.Backup: a tar of the
// store file, the batch messages and a summary) to the admin. It is a POST,
// an action, though it changes nothing: the copy holds every supporter's
// address and the dedup secret, so it needs what actions need.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="petitiond-backup.tar"`)
	// A client that stops reading would hold the store's read transaction
	// open: each write gets a deadline instead.
	cw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	start := time.Now()
	sum, err := s.st.Backup(r.Context(), cw)
	if err != nil {
		if cw.n == 0 {
			s.storeError(w, r, err)
			return
		}
		// The stream has begun: end it without its summary, which the
		// client takes for a failed backup.
		s.log.Error("backup failed midway", "remote", r.RemoteAddr, "bytes", cw.n, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.log.Info("backup written", "remote", r.RemoteAddr, "bytes", cw.n, "last_letter", sum.LastLetter,
		"events", sum.Events, "batches", sum.Batches, "messages", sum.Messages, "missing_messages", len(sum.Missing),
		"took", time.Since(start).Round(time.Millisecond))
}

// deadlineWriter sets a write deadline before each write and counts bytes.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
	n  int64
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(writeDeadline))
	n, err := d.w.Write(p)
	d.n += int64(n)
	return n, err
}

// Backup copies a backup of the running daemon's store to w and returns
// its summary, once the stream was read whole (store.ReadBackup): a backup
// cut short is an error, never a short file that looks complete.
func (c *Client) Backup(ctx context.Context, w io.Writer) (*store.BackupSummary, error) {
	resp, err := c.do(ctx, c.streams, http.MethodPost, "/api/backup", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	tee := io.TeeReader(resp.Body, w)
	sum, err := store.ReadBackup(tee, nil)
	if err == nil {
		_, err = io.Copy(io.Discard, tee) // the archive's last blocks
	}
	if err != nil {
		return nil, fmt.Errorf("backup from %s: %w", c.base, err)
	}
	return sum, nil
}
