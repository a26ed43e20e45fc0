const keep = [];
for (let i = 0; i < 1000; i++) keep.push(new Array(1 << 20).fill(i + 0.5));
console.log(keep.length);
