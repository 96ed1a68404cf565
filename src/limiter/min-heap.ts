// A binary min-heap by a numeric key, behind the small interface its users need (as p-queue keeps its
// priority queue behind one): the fair scheduler's deadlines of held requests (held-deadlines.ts).

export interface Heap<T> {
  readonly size: number
  push: (item: T) => void
  /** The item with the smallest key, left in place. */
  peek: () => T | undefined
  /** Takes the item with the smallest key out. */
  pop: () => T | undefined
}

export class MinHeap<T> implements Heap<T> {
  private readonly items: T[] = []
  private readonly key: (item: T) => number

  constructor (key: (item: T) => number) {
    this.key = key
  }

  get size (): number {
    return this.items.length
  }

  push (item: T): void {
    const heap = this.items
    heap.push(item)
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (this.key(heap[parent]) <= this.key(heap[i])) break
      ;[heap[parent], heap[i]] = [heap[i], heap[parent]]
      i = parent
    }
  }

  peek (): T | undefined {
    return this.items[0]
  }

  pop (): T | undefined {
    const heap = this.items
    const top = heap[0]
    const last = heap.pop()
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last
      for (let i = 0; ;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < heap.length && this.key(heap[l]) < this.key(heap[m])) m = l
        if (r < heap.length && this.key(heap[r]) < this.key(heap[m])) m = r
        if (m === i) break
        ;[heap[m], heap[i]] = [heap[i], heap[m]]
        i = m
      }
    }
    return top
  }
}
