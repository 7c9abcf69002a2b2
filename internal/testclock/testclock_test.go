package testclock

import (
	"testing"
	"time"
)

func TestManual(t *testing.T) {
	start := time.Date(2019, 10, 18, 12, 0, 0, 0, time.UTC)
	c := NewManual(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now() = %v, want %v", c.Now(), start)
	}
	if got := c.Advance(time.Hour); !got.Equal(start.Add(time.Hour)) || !c.Now().Equal(got) {
		t.Errorf("after Advance(1h): %v, Now() %v", got, c.Now())
	}
}

func TestSkewed(t *testing.T) {
	var c Skewed
	c.Advance(1000 * time.Hour)
	if d := c.Now().Sub(time.Now()); d < 999*time.Hour || d > 1001*time.Hour {
		t.Errorf("skew after Advance(1000h) = %v", d)
	}
}
