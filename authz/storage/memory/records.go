package memory

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/stepup-dev/stepup/authz/storage"
)

// group is one Records group: its records, and its indexes as sorted
// slices (a page is a binary search and a slice).
type group struct {
	records map[string][]byte
	indexes map[string][]string
}

func (s *Store) group(name string) *group {
	g, ok := s.groups[name]
	if !ok {
		g = &group{records: map[string][]byte{}, indexes: map[string][]string{}}
		s.groups[name] = g
	}
	return g
}

func (s *Store) GetRecords(_ context.Context, name string, names ...string) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[name]
	out := make([][]byte, len(names))
	if g == nil {
		return out, nil
	}
	for i, n := range names {
		if v, ok := g.records[n]; ok {
			out[i] = append([]byte{}, v...) // present: never nil, even when empty
		}
	}
	return out, nil
}

func (s *Store) ApplyRecords(_ context.Context, name string, ops ...storage.RecordOp) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.group(name)
	for _, op := range ops {
		v, present := g.records[op.Name]
		switch op.Kind {
		case storage.RecordInsert:
			if present {
				return &storage.RecordError{Name: op.Name, Err: storage.ErrAlreadyExists}
			}
		case storage.RecordExpect:
			if !present {
				return &storage.RecordError{Name: op.Name, Err: storage.ErrNotFound}
			}
			if !bytes.Equal(v, op.Value) {
				return &storage.RecordError{Name: op.Name, Err: storage.ErrAlreadyExists}
			}
		case storage.RecordPut, storage.RecordDelete, storage.IndexAdd, storage.IndexRemove:
		default:
			return fmt.Errorf("memory: unknown record op kind %d", op.Kind)
		}
	}
	for _, op := range ops {
		switch op.Kind {
		case storage.RecordInsert, storage.RecordPut:
			g.records[op.Name] = append([]byte{}, op.Value...)
		case storage.RecordDelete:
			delete(g.records, op.Name)
		case storage.IndexAdd:
			ix := g.indexes[op.Name]
			if i, found := slices.BinarySearch(ix, string(op.Value)); !found {
				g.indexes[op.Name] = slices.Insert(ix, i, string(op.Value))
			}
		case storage.IndexRemove:
			ix := g.indexes[op.Name]
			if i, found := slices.BinarySearch(ix, string(op.Value)); found {
				g.indexes[op.Name] = slices.Delete(ix, i, i+1)
			}
		}
	}
	return nil
}

func (s *Store) ScanIndex(_ context.Context, name, index, after string, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[name]
	if g == nil || limit <= 0 {
		return nil, nil
	}
	ix := g.indexes[index]
	i, found := slices.BinarySearch(ix, after)
	if found {
		i++
	}
	end := min(i+limit, len(ix))
	return slices.Clone(ix[i:end]), nil
}

func (s *Store) IndexSize(_ context.Context, name, index string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[name]; g != nil {
		return int64(len(g.indexes[index])), nil
	}
	return 0, nil
}

func (s *Store) Follow(_ context.Context, name, entry, prefix string) ([]byte, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[name]
	if g == nil {
		return nil, nil, nil
	}
	id, ok := g.records[entry]
	if !ok {
		return nil, nil, nil
	}
	var rec []byte
	if v, ok := g.records[prefix+string(id)]; ok {
		rec = append([]byte{}, v...)
	}
	return append([]byte{}, id...), rec, nil
}
