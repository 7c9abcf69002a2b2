package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
)

// petitiond: dataReader copies runs of a line in bulk; upstreamRead is
// v0.26.0's byte-by-byte Read (with petitiond's exact-limit change), and
// the two must read the same message, stop at the same place and fail the
// same way on any input.
func upstreamRead(r *dataReader, b []byte) (n int, err error) {
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	if r.limited {
		if r.n <= 0 {
			if r.state == stateEOF {
				return 0, io.EOF
			}
			if r.state == stateBeginLine {
				if p, perr := r.r.Peek(3); perr == nil && string(p) == ".\r\n" {
					r.r.Discard(3)
					r.state = stateEOF
					return 0, io.EOF
				}
			}
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	if r.limited {
		r.n -= int64(n)
	}
	return
}

// readAll reads a message through read with reads of random sizes, and
// returns it, the error that ended it, and what the connection still holds.
func readAll(rng *rand.Rand, input []byte, bufSize int, limit int64, read func(*dataReader, []byte) (int, error)) ([]byte, error, []byte) {
	br := bufio.NewReaderSize(bytes.NewReader(input), bufSize)
	r := &dataReader{r: br, limited: limit > 0, n: limit}
	var out []byte
	for i := 0; i < 100000; i++ {
		b := make([]byte, 1+rng.Intn(64))
		n, err := read(r, b)
		out = append(out, b[:n]...)
		if err != nil {
			rest, _ := io.ReadAll(br)
			return out, err, rest
		}
	}
	panic("reader never ended")
}

func TestDataReaderMatchesUpstream(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab.\r\n\r\n..")
	for i := 0; i < 50000; i++ {
		input := make([]byte, rng.Intn(120))
		for j := range input {
			input[j] = alphabet[rng.Intn(len(alphabet))]
		}
		if rng.Intn(2) == 0 {
			input = append(input, ".\r\nMAIL FROM:<a@b>\r\n"...)
		}
		bufSize := 16 + rng.Intn(64)
		var limit int64
		if rng.Intn(3) == 0 {
			limit = int64(rng.Intn(80))
		}
		seed := rng.Int63()
		want, wantErr, wantRest := readAll(rand.New(rand.NewSource(seed)), input, bufSize, limit, upstreamRead)
		got, gotErr, gotRest := readAll(rand.New(rand.NewSource(seed)), input, bufSize, limit, (*dataReader).Read)
		if !bytes.Equal(got, want) || !errors.Is(gotErr, wantErr) || !bytes.Equal(gotRest, wantRest) {
			t.Fatalf("input %q (buffer %d, limit %d):\n got %q, %v, rest %q\nwant %q, %v, rest %q",
				input, bufSize, limit, got, gotErr, gotRest, want, wantErr, wantRest)
		}
	}
}
