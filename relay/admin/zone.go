package admin

import (
	"encoding/json"
	"reflect"
	"time"
)

// The store keeps times in UTC; people read them in campaign.timezone. So
// every time the API answers with is the same instant read in that zone,
// RFC 3339 with its offset (SPEC 3), converted here on the way out rather
// than in each handler.

var timeType = reflect.TypeFor[time.Time]()

// inZone returns a copy of v with every non-zero time.Time in it (through
// structs, pointers, slices, arrays and maps) read in loc. The copy is
// made through JSON, the shape the answer has anyway, so the caller's
// values are never changed; should v not survive that, it is returned as
// it is.
func inZone(v any, loc *time.Location) any {
	if loc == nil || v == nil {
		return v
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return v
	}
	cp := reflect.New(reflect.TypeOf(v))
	if err := json.Unmarshal(raw, cp.Interface()); err != nil {
		return v
	}
	zoneTimes(cp.Elem(), loc)
	return cp.Interface()
}

// zoneTimes sets, in place, every non-zero time reachable from rv to loc.
func zoneTimes(rv reflect.Value, loc *time.Location) {
	if rv.Type() == timeType {
		if t := rv.Interface().(time.Time); !t.IsZero() && rv.CanSet() {
			rv.Set(reflect.ValueOf(t.In(loc)))
		}
		return
	}
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() {
			zoneTimes(rv.Elem(), loc)
		}
	case reflect.Struct:
		for i := range rv.NumField() {
			if f := rv.Field(i); f.CanSet() {
				zoneTimes(f, loc)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			zoneTimes(rv.Index(i), loc)
		}
	case reflect.Map:
		for _, k := range rv.MapKeys() {
			e := reflect.New(rv.Type().Elem()).Elem()
			e.Set(rv.MapIndex(k))
			zoneTimes(e, loc)
			rv.SetMapIndex(k, e)
		}
	}
}
