package deliver

import "sync"

// Dispatcher runs the attempts of one scheduler (the delivery of batch
// copies, a secondary's forwarding): at most a fixed number at once, never
// two for the same item, each in a goroutine of its own.
type Dispatcher[K comparable] struct {
	sem      chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	inflight map[K]bool
}

// NewDispatcher makes a dispatcher of workers attempts at once.
func NewDispatcher[K comparable](workers int) *Dispatcher[K] {
	return &Dispatcher[K]{sem: make(chan struct{}, workers), inflight: map[K]bool{}}
}

// Running is how many attempts run now.
func (d *Dispatcher[K]) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.inflight)
}

// Start runs attempt for each item of due that is not running already,
// while a worker is free; free is called whenever an attempt has ended and
// its worker is free again. It returns false when every worker was busy
// before due was done: the caller waits for free rather than a deadline.
func (d *Dispatcher[K]) Start(due []K, attempt func(K), free func()) bool {
	for _, k := range due {
		d.mu.Lock()
		busy := d.inflight[k]
		d.mu.Unlock()
		if busy {
			continue
		}
		select {
		case d.sem <- struct{}{}:
		default:
			return false
		}
		d.mu.Lock()
		d.inflight[k] = true
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			attempt(k)
			d.mu.Lock()
			delete(d.inflight, k)
			d.mu.Unlock()
			<-d.sem
			free()
		}()
	}
	return true
}

// Wait waits for every attempt started to end.
func (d *Dispatcher[K]) Wait() { d.wg.Wait() }
