package smtpclient

import (
	"bytes"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
)

func TestLetterID(t *testing.T) {
	for _, c := range []struct {
		r    Reply
		want string
	}{
		{Reply{250, "2.0.0 queued as L0000002A"}, "L0000002A"},
		{Reply{250, "2.0.0 queued as L0000002A, thank you"}, "L0000002A"},
		{Reply{250, "2.0.0 already counted, thank you"}, ""},
		{Reply{451, "4.3.0 queued as L1"}, ""},
		{Reply{250, "2.0.0 queued as "}, ""},
	} {
		if got := c.r.LetterID(); got != c.want {
			t.Errorf("LetterID(%q) = %q, want %q", c.r.String(), got, c.want)
		}
	}
}

// TestSendMail runs a whole session against a real receiving server,
// including a refusal at RCPT.
func TestSendMail(t *testing.T) {
	s, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("From: a@x.test\r\nSubject: hi\r\n\r\n.leading dot\r\n")
	r, err := SendMail(s.Addr, "client.test", "a@x.test", []string{"b@y.test"}, msg, 5*time.Second)
	if err != nil || r.Code != 250 {
		t.Fatalf("send: %v %v", r, err)
	}
	got := s.Messages()
	if len(got) != 1 || got[0].From != "a@x.test" || !bytes.Equal(got[0].Data, msg) {
		t.Errorf("received %+v", got)
	}

	s.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
	if r, err := SendMail(s.Addr, "client.test", "a@x.test", []string{"b@y.test"}, msg, 5*time.Second); err != nil || r.Code != 550 {
		t.Errorf("refused RCPT: got %v %v, want the 550", r, err)
	}
	if _, err := SendMail("127.0.0.1:1", "client.test", "a@x.test", []string{"b@y.test"}, msg, time.Second); err == nil {
		t.Errorf("no server: no error")
	}
}
